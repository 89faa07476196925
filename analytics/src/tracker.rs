//! ByteTrack-style multi-object tracking for one camera.
//!
//! Each frame: predict every track with its Kalman filter; match confident
//! detections to live and recently lost tracks (IoU weighted by score); match
//! what is left of the live tracks to the *low*-score detections, which are
//! usually the same objects half hidden; confirm new tracks after a few hits;
//! give up on tracks unseen for too long. Labels never mix: a track only
//! matches detections of its own label.

use serde::{Deserialize, Serialize};

use crate::assign::match_pairs;
use crate::geometry::{iou, PixelBox};
use crate::kalman::BoxFilter;

/// Tracker settings. Scores are the detector's (0-1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// A track is confirmed (and its event opened) after this many
    /// consecutive frames with a match.
    pub confirm_hits: u32,
    /// A confirmed track unseen for this many analysed frames is over.
    pub lost_frames: u32,
    /// ... or for this long by the box's clock, however few frames came in
    /// between (a camera that was down): see [`crate::CameraAnalytics::expire`].
    pub lost_after_ms: i64,
    /// Confident detections need IoU x score at least this with a track.
    pub match_similarity: f32,
    /// Low-score detections need at least this IoU with a live track.
    pub low_match_iou: f32,
    /// A new track starts only from a detection this much above the
    /// confident bar, so one noisy box does not start a track.
    pub new_track_margin: f32,
    /// Boxes are widened by this fraction of their size on every side
    /// before overlaps are measured (buffered IoU): at a few analysed frames
    /// per second a small walking person moves most of a body width between
    /// frames, and plain IoU would see no overlap.
    pub match_buffer: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        // ByteTrack's published settings (match 0.8 as a distance, second
        // pass 0.5, new tracks at +0.1), with confirmation after 3 frames:
        // at 5 analysed frames per second, 0.6 s of presence.
        Self {
            confirm_hits: 3,
            lost_frames: 10,
            lost_after_ms: 2_000,
            match_similarity: 0.2,
            low_match_iou: 0.5,
            new_track_margin: 0.1,
            match_buffer: 0.5,
        }
    }
}

/// A detection offered to the tracker.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub label: String,
    pub score: f32,
    pub bbox: PixelBox,
    /// The confident bar of this label: detections at or above it can start
    /// or keep a track in the first pass; those below can only keep a live
    /// track going.
    pub confident_from: f32,
}

impl Observation {
    pub fn confident(&self) -> bool {
        self.score >= self.confident_from
    }

    /// A new track needs a score `margin` above the confident bar, so one
    /// noisy box does not start a track; capped halfway to 1 so that a high
    /// bar still lets tracks start.
    fn starts_track(&self, margin: f32) -> bool {
        let bar = self.confident_from;
        self.score >= (bar + margin).min((bar + 1.0) / 2.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Seen, not yet confirmed: dropped at its first miss.
    Tentative,
    Tracked,
    /// Confirmed, missed lately, still matchable.
    Lost,
}

#[derive(Debug, Clone)]
struct Track {
    /// 0 until confirmed: public ids are only spent on real objects.
    id: u64,
    label: String,
    state: State,
    filter: BoxFilter,
    hits: u32,
    missed: u32,
    score: f32,
    bbox: PixelBox,
    /// Where the track was first seen, tentative still.
    first_bbox: PixelBox,
}

/// A confirmed track seen in this frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedObject {
    pub track_id: u64,
    pub label: String,
    pub score: f32,
    /// The detection's box (not the filter's), in source pixels.
    pub bbox: PixelBox,
    /// Index of the detection in the frame's observation list.
    pub observation: usize,
    /// The box the track was first seen with, before it was confirmed:
    /// where the object came from.
    pub first_bbox: PixelBox,
}

/// What one frame did to the tracks.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TrackerUpdate {
    /// Confirmed tracks matched in this frame, in id order.
    pub seen: Vec<TrackedObject>,
    /// Ids confirmed in this frame (also in `seen`).
    pub confirmed: Vec<u64>,
    /// Ids given up in this frame.
    pub ended: Vec<u64>,
}

pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(config: TrackerConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
        }
    }

    /// Tracks that are confirmed and not over (tracked or lost).
    pub fn active_ids(&self) -> Vec<u64> {
        self.tracks
            .iter()
            .filter(|t| t.state != State::Tentative)
            .map(|t| t.id)
            .collect()
    }

    /// Ends every track, as if all were lost for good.
    pub fn end_all(&mut self) -> Vec<u64> {
        let ended = self.active_ids();
        self.tracks.clear();
        ended
    }

    /// Folds one frame's observations into the tracks.
    pub fn update(&mut self, observations: &[Observation]) -> TrackerUpdate {
        for t in &mut self.tracks {
            t.filter.predict();
        }
        let mut matched_track = vec![false; self.tracks.len()];
        let mut used = vec![false; observations.len()];
        let mut matches: Vec<(usize, usize)> = Vec::new();

        // 1. Confident detections against confirmed tracks, live or lost.
        let confirmed: Vec<usize> = self.indices(|t| t.state != State::Tentative);
        let confident: Vec<usize> = (0..observations.len())
            .filter(|&i| observations[i].confident())
            .collect();
        self.associate(
            &confirmed,
            &confident,
            observations,
            self.config.match_similarity,
            true,
            &mut matches,
        );
        mark(&matches, &mut matched_track, &mut used);

        // 2. Live tracks still unmatched against the low-score detections.
        let live: Vec<usize> = self
            .indices(|t| t.state == State::Tracked)
            .into_iter()
            .filter(|&t| !matched_track[t])
            .collect();
        let low: Vec<usize> = (0..observations.len())
            .filter(|&i| !observations[i].confident() && !used[i])
            .collect();
        self.associate(
            &live,
            &low,
            observations,
            self.config.low_match_iou,
            false,
            &mut matches,
        );
        mark(&matches, &mut matched_track, &mut used);

        // 3. Tentative tracks against the confident detections left over.
        let tentative: Vec<usize> = self.indices(|t| t.state == State::Tentative);
        let rest: Vec<usize> = confident.iter().copied().filter(|&i| !used[i]).collect();
        self.associate(
            &tentative,
            &rest,
            observations,
            self.config.match_similarity,
            true,
            &mut matches,
        );
        mark(&matches, &mut matched_track, &mut used);

        let mut update = TrackerUpdate::default();
        for &(t, o) in &matches {
            let obs = &observations[o];
            let track = &mut self.tracks[t];
            track.filter.update(&obs.bbox);
            track.hits += 1;
            track.missed = 0;
            track.score = obs.score;
            track.bbox = obs.bbox;
            match track.state {
                State::Tentative if track.hits >= self.config.confirm_hits => {
                    track.state = State::Tracked;
                    track.id = self.next_id;
                    self.next_id += 1;
                    update.confirmed.push(track.id);
                }
                State::Tentative => {}
                State::Tracked | State::Lost => track.state = State::Tracked,
            }
            if track.state == State::Tracked {
                update.seen.push(TrackedObject {
                    track_id: track.id,
                    label: track.label.clone(),
                    score: obs.score,
                    bbox: obs.bbox,
                    observation: o,
                    first_bbox: track.first_bbox,
                });
            }
        }

        // Unmatched: tentative tracks die, confirmed ones go lost, then end.
        let lost_frames = self.config.lost_frames;
        for (t, track) in self.tracks.iter_mut().enumerate() {
            if matched_track[t] {
                continue;
            }
            track.missed += 1;
            track.hits = 0;
            if track.state == State::Tracked {
                track.state = State::Lost;
            }
        }
        self.tracks.retain(|t| {
            let over = match t.state {
                State::Tentative => t.missed > 0,
                _ => t.missed > lost_frames,
            };
            if over && t.state != State::Tentative {
                update.ended.push(t.id);
            }
            !over
        });

        // 4. New tracks from confident detections nobody claimed.
        for (o, obs) in observations.iter().enumerate() {
            if used[o] || !obs.starts_track(self.config.new_track_margin) {
                continue;
            }
            let mut track = Track {
                id: 0,
                label: obs.label.clone(),
                state: State::Tentative,
                filter: BoxFilter::new(&obs.bbox),
                hits: 1,
                missed: 0,
                score: obs.score,
                bbox: obs.bbox,
                first_bbox: obs.bbox,
            };
            if self.config.confirm_hits <= 1 {
                track.state = State::Tracked;
                track.id = self.next_id;
                self.next_id += 1;
                update.confirmed.push(track.id);
                update.seen.push(TrackedObject {
                    track_id: track.id,
                    label: track.label.clone(),
                    score: obs.score,
                    bbox: obs.bbox,
                    observation: o,
                    first_bbox: obs.bbox,
                });
            }
            self.tracks.push(track);
        }
        update.seen.sort_by_key(|s| s.track_id);
        update.ended.sort_unstable();
        update
    }

    fn indices(&self, keep: impl Fn(&Track) -> bool) -> Vec<usize> {
        (0..self.tracks.len())
            .filter(|&i| keep(&self.tracks[i]))
            .collect()
    }

    /// Matches `tracks` with `observations` (both index lists) and appends
    /// the pairs, as indices into `self.tracks` and the frame's list.
    fn associate(
        &self,
        tracks: &[usize],
        candidates: &[usize],
        observations: &[Observation],
        min_similarity: f32,
        weigh_by_score: bool,
        out: &mut Vec<(usize, usize)>,
    ) {
        if tracks.is_empty() || candidates.is_empty() {
            return;
        }
        let similarity: Vec<Vec<f32>> = tracks
            .iter()
            .map(|&t| {
                let track = &self.tracks[t];
                let predicted = widen(&track.filter.bbox(), self.config.match_buffer);
                candidates
                    .iter()
                    .map(|&o| {
                        let obs = &observations[o];
                        if obs.label != track.label {
                            return 0.0;
                        }
                        let overlap = iou(&predicted, &widen(&obs.bbox, self.config.match_buffer));
                        if weigh_by_score {
                            overlap * obs.score
                        } else {
                            overlap
                        }
                    })
                    .collect()
            })
            .collect();
        out.extend(
            match_pairs(&similarity, min_similarity)
                .into_iter()
                .map(|(r, c)| (tracks[r], candidates[c])),
        );
    }
}

fn widen(b: &PixelBox, by: f32) -> PixelBox {
    let (dx, dy) = ((b[2] - b[0]) * by, (b[3] - b[1]) * by);
    [b[0] - dx, b[1] - dy, b[2] + dx, b[3] + dy]
}

fn mark(matches: &[(usize, usize)], matched_track: &mut [bool], used: &mut [bool]) {
    for &(t, o) in matches {
        matched_track[t] = true;
        used[o] = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(label: &str, score: f32, x: f32) -> Observation {
        Observation {
            label: label.into(),
            score,
            bbox: [x, 100.0, x + 40.0, 200.0],
            confident_from: 0.5,
        }
    }

    /// A tracker with one person confirmed (two hits) at `x`.
    fn tracking_one(x: f32) -> Tracker {
        let mut t = Tracker::new(config());
        t.update(&[obs("person", 0.9, x)]);
        t.update(&[obs("person", 0.9, x + 2.0)]);
        t
    }

    /// Feeds `frames` frames of one observation; true if none confirmed a track.
    fn never_confirms(score: f32, frames: usize) -> bool {
        let mut t = Tracker::new(config());
        (0..frames).all(|_| t.update(&[obs("person", score, 100.0)]).seen.is_empty())
    }

    fn config() -> TrackerConfig {
        TrackerConfig {
            confirm_hits: 2,
            lost_frames: 3,
            ..Default::default()
        }
    }

    #[test]
    fn a_track_is_confirmed_after_its_hits_and_keeps_its_id() {
        let mut t = Tracker::new(config());
        let u = t.update(&[obs("person", 0.9, 100.0)]);
        assert!(
            u.seen.is_empty() && u.confirmed.is_empty(),
            "tentative first"
        );
        let u = t.update(&[obs("person", 0.9, 104.0)]);
        assert_eq!(u.confirmed, vec![1]);
        for step in 2..10 {
            let u = t.update(&[obs("person", 0.9, 100.0 + 4.0 * step as f32)]);
            assert_eq!(u.seen.len(), 1);
            assert_eq!(u.seen[0].track_id, 1);
        }
    }

    #[test]
    fn a_single_noisy_box_never_becomes_a_track() {
        let mut t = Tracker::new(config());
        t.update(&[obs("person", 0.9, 100.0)]);
        let u = t.update(&[]);
        assert!(u.ended.is_empty(), "tentative tracks end silently");
        let u = t.update(&[obs("person", 0.9, 400.0)]);
        assert!(u.confirmed.is_empty());
        // Just above the confident bar but below bar + margin: no track.
        assert!(never_confirms(0.55, 5));
    }

    #[test]
    fn low_score_detections_keep_a_live_track_but_start_none() {
        let mut t = tracking_one(100.0);
        // Partly hidden: the detector is unsure, the track goes on.
        for step in 0..5 {
            let u = t.update(&[obs("person", 0.3, 104.0 + 2.0 * step as f32)]);
            assert_eq!(u.seen.len(), 1, "step {step}");
            assert_eq!(u.seen[0].track_id, 1);
        }
        // Low scores alone start nothing.
        assert!(never_confirms(0.3, 5));
    }

    #[test]
    fn a_lost_track_is_found_again_then_ended_after_its_limit() {
        let mut t = tracking_one(100.0);
        // Hidden for two frames (limit 3), back at the same place.
        assert!(t.update(&[]).seen.is_empty());
        assert!(t.update(&[]).seen.is_empty());
        let u = t.update(&[obs("person", 0.9, 102.0)]);
        assert_eq!(u.seen[0].track_id, 1, "same id after a short gap");
        // Gone for good: ends on the fourth missed frame.
        for _ in 0..3 {
            assert!(t.update(&[]).ended.is_empty());
        }
        assert_eq!(t.update(&[]).ended, vec![1]);
        assert!(t.active_ids().is_empty());
    }

    #[test]
    fn labels_never_share_a_track_and_crossing_objects_keep_their_ids() {
        let mut t = Tracker::new(config());
        // A person and a car at the same place: two tracks.
        for _ in 0..2 {
            t.update(&[obs("person", 0.9, 100.0), obs("car", 0.9, 100.0)]);
        }
        assert_eq!(t.active_ids().len(), 2);

        // Two people walking towards each other: the motion model keeps
        // them apart while their boxes overlap.
        let mut t = Tracker::new(config());
        let mut ids_left_walker = Vec::new();
        for step in 0..12 {
            let a = 100.0 + 10.0 * step as f32;
            let b = 225.0 - 10.0 * step as f32;
            let u = t.update(&[obs("person", 0.9, a), obs("person", 0.8, b)]);
            if let Some(s) = u.seen.iter().find(|s| s.observation == 0) {
                ids_left_walker.push(s.track_id);
            }
        }
        assert!(ids_left_walker.len() >= 9);
        assert!(
            ids_left_walker.iter().all(|&id| id == ids_left_walker[0]),
            "{ids_left_walker:?}"
        );
    }

    #[test]
    fn end_all_reports_every_confirmed_track() {
        let mut t = Tracker::new(config());
        t.update(&[obs("person", 0.9, 100.0), obs("person", 0.9, 300.0)]);
        t.update(&[obs("person", 0.9, 100.0), obs("person", 0.9, 300.0)]);
        t.update(&[obs("person", 0.9, 600.0)]);
        assert_eq!(t.end_all(), vec![1, 2]);
        assert!(t.active_ids().is_empty());
    }
}
