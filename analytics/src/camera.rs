//! One camera's analytics: tracks become events, zone visits, line
//! crossings and per-minute counts.

use std::collections::BTreeMap;

use crate::geometry::{area, foot_point, Direction, PixelBox, Point};
use crate::scene::{CountLine, Scene};
use crate::tracker::{Observation, TrackedObject, Tracker, TrackerConfig};

/// An object must be this far from a counting line (in frame units) before
/// its side counts, so a foot point jittering on the line counts once.
const LINE_DEAD_BAND: f32 = 0.01;
/// A better sighting replaces an event's best only by this factor, and only
/// this often: each replacement costs a JPEG and a database write.
const BEST_GAIN: f32 = 1.1;
const BEST_EVERY_MS: i64 = 1_000;

/// One detection as the model gave it.
#[derive(Debug, Clone, Copy)]
pub struct Detected<'a> {
    pub label: &'a str,
    pub score: f32,
    pub bbox: PixelBox,
}

/// The frame the detections came from. `wall_ms` is the box's clock (Unix
/// milliseconds): events and counts are wall-clock facts.
#[derive(Debug, Clone, Copy)]
pub struct FrameInfo {
    pub width: u32,
    pub height: u32,
    pub wall_ms: i64,
}

/// A tracked object's life so far.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub track_id: u64,
    pub label: String,
    pub start_ms: i64,
    /// Set when the track ends: the last time the object was seen.
    pub end_ms: Option<i64>,
    pub last_seen_ms: i64,
    pub max_score: f32,
    /// The best sighting so far (by score and size).
    pub best_box: PixelBox,
    pub best_score: f32,
    /// Zones entered, in order, each once.
    pub zones: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Opened,
    Updated,
    Closed,
}

/// An event to store (again).
#[derive(Debug, Clone, PartialEq)]
pub struct EventChange {
    pub phase: Phase,
    pub event: Event,
    /// This frame holds the event's new best sighting: take its snapshot now.
    pub new_best: bool,
}

/// An object crossed a counting line.
#[derive(Debug, Clone, PartialEq)]
pub struct Crossing {
    pub line: String,
    pub direction: Direction,
    pub track_id: u64,
    pub label: String,
    pub wall_ms: i64,
}

/// One to add to the per-minute counts. `zone` is empty for the whole frame
/// (new objects), a zone's name (objects entering it), or `line:in` /
/// `line:out` (objects crossing a counting line).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CountKey {
    pub minute_ms: i64,
    pub label: String,
    pub zone: String,
}

/// What analytics made of one frame.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FrameAnalysis {
    /// Indices of the detections worth storing and showing.
    pub kept: Vec<usize>,
    /// Confirmed tracks seen in this frame, with their detection's index.
    pub tracks: Vec<TrackedObject>,
    pub events: Vec<EventChange>,
    pub crossings: Vec<Crossing>,
    pub counts: Vec<CountKey>,
}

/// Whether `p` stands clearly on the right of `line` (`None` inside its
/// dead band, where the side is not trusted).
fn clear_side(line: &CountLine, p: Point) -> Option<bool> {
    let distance = line.segment.side(p);
    (distance.abs() >= LINE_DEAD_BAND).then_some(distance > 0.0)
}

struct Live {
    event: Event,
    best_quality: f32,
    best_ms: i64,
    /// Per counting line: the last side the object stood clearly on, and
    /// where.
    sides: Vec<Option<(bool, Point)>>,
}

pub struct CameraAnalytics {
    scene: Scene,
    tracker: Tracker,
    live: BTreeMap<u64, Live>,
    /// The box's clock at the last frame, which later frames never go
    /// below (see [`Self::process`]).
    last_wall_ms: Option<i64>,
    lost_after_ms: i64,
}

impl CameraAnalytics {
    pub fn new(scene: Scene, tracker: TrackerConfig) -> Self {
        Self {
            scene,
            lost_after_ms: tracker.lost_after_ms,
            tracker: Tracker::new(tracker),
            live: BTreeMap::new(),
            last_wall_ms: None,
        }
    }

    /// Ends every live track if no frame came for longer than a track
    /// lives (the camera is down or reconnecting): what was in view then is
    /// gone, and an object standing where one stood an hour ago is a new
    /// event, not the old one's continuation. Called by [`Self::process`],
    /// and by the caller for cameras that send nothing.
    pub fn expire(&mut self, now_ms: i64) -> Vec<EventChange> {
        match self.last_wall_ms {
            Some(last) if now_ms - last > self.lost_after_ms => self.finish(),
            _ => Vec::new(),
        }
    }

    pub fn scene(&self) -> &Scene {
        &self.scene
    }

    /// Folds one frame's detections in.
    pub fn process(&mut self, frame: FrameInfo, detections: &[Detected<'_>]) -> FrameAnalysis {
        // The box's clock may step back (NTP): time here never does, so an
        // event never ends before it starts.
        let wall_ms = self
            .last_wall_ms
            .map_or(frame.wall_ms, |last| frame.wall_ms.max(last));
        let frame = FrameInfo { wall_ms, ..frame };
        let mut out = FrameAnalysis {
            events: self.expire(wall_ms),
            ..Default::default()
        };
        self.last_wall_ms = Some(wall_ms);
        let mut index = Vec::new();
        let mut observations = Vec::new();
        for (i, d) in detections.iter().enumerate() {
            if !self
                .scene
                .admits(d.label, d.score, &d.bbox, frame.width, frame.height)
            {
                continue;
            }
            let confident_from = self.scene.confident_from(d.label);
            if d.score >= confident_from {
                out.kept.push(i);
            }
            index.push(i);
            observations.push(Observation {
                label: d.label.to_string(),
                score: d.score,
                bbox: d.bbox,
                confident_from,
            });
        }
        let update = self.tracker.update(&observations);
        let minute_ms = frame.wall_ms - frame.wall_ms.rem_euclid(60_000);
        let count = |label: &str, zone: String| CountKey {
            minute_ms,
            label: label.to_string(),
            zone,
        };

        for seen in &update.seen {
            let opened = update.confirmed.contains(&seen.track_id);
            if opened {
                self.live.insert(
                    seen.track_id,
                    Live {
                        event: Event {
                            track_id: seen.track_id,
                            label: seen.label.clone(),
                            start_ms: frame.wall_ms,
                            end_ms: None,
                            last_seen_ms: frame.wall_ms,
                            max_score: seen.score,
                            best_box: seen.bbox,
                            best_score: seen.score,
                            zones: Vec::new(),
                        },
                        best_quality: 0.0,
                        best_ms: i64::MIN,
                        // From where it was first seen, so a line crossed
                        // while the track was being confirmed still counts.
                        sides: {
                            let from = foot_point(&seen.first_bbox, frame.width, frame.height);
                            self.scene
                                .lines
                                .iter()
                                .map(|line| clear_side(line, from).map(|right| (right, from)))
                                .collect()
                        },
                    },
                );
                out.counts.push(count(&seen.label, String::new()));
            }
            let Some(live) = self.live.get_mut(&seen.track_id) else {
                continue;
            };
            let foot = foot_point(&seen.bbox, frame.width, frame.height);
            let event = &mut live.event;
            event.last_seen_ms = frame.wall_ms;
            event.max_score = event.max_score.max(seen.score);

            let mut zones_changed = false;
            for zone in self.scene.zones_at(foot) {
                if !event.zones.iter().any(|z| z == zone) {
                    event.zones.push(zone.to_string());
                    out.counts.push(count(&seen.label, zone.to_string()));
                    zones_changed = true;
                }
            }

            let quality = seen.score * (area(&seen.bbox)).sqrt();
            let new_best = live.best_ms == i64::MIN
                || (quality > live.best_quality * BEST_GAIN
                    && frame.wall_ms - live.best_ms >= BEST_EVERY_MS);
            if new_best {
                live.best_quality = quality;
                live.best_ms = frame.wall_ms;
                event.best_box = seen.bbox;
                event.best_score = seen.score;
            }

            for (line, side) in self.scene.lines.iter().zip(live.sides.iter_mut()) {
                let Some(right) = clear_side(line, foot) else {
                    continue;
                };
                if let Some((was_right, from)) = *side {
                    if was_right != right {
                        if let Some(direction) = line.segment.crossing(from, foot) {
                            out.counts.push(count(
                                &seen.label,
                                format!("{}:{}", line.name, direction.as_str()),
                            ));
                            out.crossings.push(Crossing {
                                line: line.name.clone(),
                                direction,
                                track_id: seen.track_id,
                                label: seen.label.clone(),
                                wall_ms: frame.wall_ms,
                            });
                        }
                    }
                }
                *side = Some((right, foot));
            }

            if opened || zones_changed || new_best {
                out.events.push(EventChange {
                    phase: if opened {
                        Phase::Opened
                    } else {
                        Phase::Updated
                    },
                    event: event.clone(),
                    new_best,
                });
            }
        }

        for id in update.ended {
            self.close(id, &mut out.events);
        }
        for seen in &update.seen {
            out.tracks.push(TrackedObject {
                observation: index[seen.observation],
                ..seen.clone()
            });
        }
        out
    }

    /// Ends every live track (the camera stopped, or the appliance does).
    pub fn finish(&mut self) -> Vec<EventChange> {
        let mut events = Vec::new();
        for id in self.tracker.end_all() {
            self.close(id, &mut events);
        }
        events
    }

    fn close(&mut self, id: u64, events: &mut Vec<EventChange>) {
        if let Some(mut live) = self.live.remove(&id) {
            live.event.end_ms = Some(live.event.last_seen_ms);
            events.push(EventChange {
                phase: Phase::Closed,
                event: live.event,
                new_best: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{Polygon, Segment};
    use crate::scene::Zone;

    const W: u32 = 1000;
    const H: u32 = 1000;

    fn analytics() -> CameraAnalytics {
        let scene = Scene {
            min_score: 0.5,
            track_min_score: 0.2,
            zones: vec![Zone {
                name: "right_half".into(),
                polygon: Polygon::new(vec![[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]])
                    .unwrap(),
            }],
            lines: vec![CountLine {
                name: "gate".into(),
                segment: Segment::new([0.4, 0.0], [0.4, 1.0]).unwrap(),
            }],
            ..Default::default()
        };
        let tracker = TrackerConfig {
            confirm_hits: 2,
            lost_frames: 2,
            ..Default::default()
        };
        CameraAnalytics::new(scene, tracker)
    }

    /// A person whose feet stand at `x` (pixels), frame `i` at 200 ms steps.
    fn step(a: &mut CameraAnalytics, i: i64, x: f32) -> FrameAnalysis {
        let frame = FrameInfo {
            width: W,
            height: H,
            wall_ms: 60_000 + 200 * i,
        };
        let d = Detected {
            label: "person",
            score: 0.9,
            bbox: [x - 20.0, 400.0, x + 20.0, 500.0],
        };
        a.process(frame, &[d])
    }

    #[test]
    fn a_walk_across_opens_updates_crosses_and_closes_one_event() {
        let mut a = analytics();
        let mut all = FrameAnalysis::default();
        // Walks right from x=300 to x=700 in 10 px steps.
        for i in 0..41 {
            let f = step(&mut a, i, 300.0 + 10.0 * i as f32);
            all.events.extend(f.events);
            all.crossings.extend(f.crossings);
            all.counts.extend(f.counts);
        }
        for i in 41..45 {
            all.events.extend(
                a.process(
                    FrameInfo {
                        width: W,
                        height: H,
                        wall_ms: 60_000 + 200 * i,
                    },
                    &[],
                )
                .events,
            );
        }
        let phases: Vec<Phase> = all.events.iter().map(|e| e.phase).collect();
        assert_eq!(phases.first(), Some(&Phase::Opened));
        assert_eq!(phases.last(), Some(&Phase::Closed));
        assert_eq!(phases.iter().filter(|p| **p == Phase::Opened).count(), 1);
        let closed = &all.events.last().unwrap().event;
        assert_eq!(closed.track_id, 1);
        assert_eq!(closed.start_ms, 60_200, "confirmed on the second frame");
        assert_eq!(
            closed.end_ms,
            Some(60_000 + 200 * 40),
            "last seen, not closed"
        );
        assert_eq!(closed.zones, vec!["right_half".to_string()]);
        // Rightwards across a line drawn downwards: from its right-hand
        // side to its left-hand side, i.e. "out".
        assert_eq!(all.crossings.len(), 1);
        assert_eq!(all.crossings[0].direction, Direction::Out);
        let zones: Vec<&str> = all.counts.iter().map(|c| c.zone.as_str()).collect();
        assert_eq!(zones, vec!["", "gate:out", "right_half"]);
        assert!(all.counts.iter().all(|c| c.minute_ms == 60_000));
    }

    #[test]
    fn jitter_on_the_line_counts_once_and_a_return_counts_back() {
        let mut a = analytics();
        let mut crossings = Vec::new();
        // Feet start left of the line at 380 px, then hover around 400 px
        // (the line), inside the dead band, then walk to 450 and back to 350.
        let path = [
            380.0, 380.0, 380.0, 398.0, 403.0, 397.0, 404.0, 415.0, 425.0, 432.0, 436.0, 436.0,
            432.0, 425.0, 415.0, 405.0, 395.0, 385.0, 375.0,
        ];
        for (i, x) in path.iter().enumerate() {
            crossings.extend(step(&mut a, i as i64, *x).crossings);
        }
        let dirs: Vec<Direction> = crossings.iter().map(|c| c.direction).collect();
        assert_eq!(dirs, vec![Direction::Out, Direction::In]);
    }

    #[test]
    fn finish_closes_what_is_open_and_new_bests_are_rate_limited() {
        let mut a = analytics();
        let mut bests = 0;
        for i in 0..10 {
            // Growing box: every frame is a better sighting, but a new best
            // is taken at most once a second (every 5 frames here).
            let frame = FrameInfo {
                width: W,
                height: H,
                wall_ms: 200 * i,
            };
            let grow = 10.0 * i as f32;
            let d = Detected {
                label: "person",
                score: 0.9,
                bbox: [100.0, 400.0 - grow, 140.0 + grow, 500.0],
            };
            bests += a
                .process(frame, &[d])
                .events
                .iter()
                .filter(|e| e.new_best)
                .count();
        }
        assert_eq!(bests, 2, "at confirmation (200 ms) and at 1200 ms");
        let closed = a.finish();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].phase, Phase::Closed);
        assert_eq!(closed[0].event.end_ms, Some(1_800));
        assert!(a.finish().is_empty());
    }

    fn person_at(x: f32, bottom: f32) -> Detected<'static> {
        Detected {
            label: "person",
            score: 0.9,
            bbox: [x - 20.0, bottom - 100.0, x + 20.0, bottom],
        }
    }

    fn at(wall_ms: i64) -> FrameInfo {
        FrameInfo {
            width: W,
            height: H,
            wall_ms,
        }
    }

    #[test]
    fn after_a_camera_outage_an_object_in_the_old_place_is_a_new_event() {
        let mut a = analytics();
        for i in 0..3 {
            a.process(at(200 * i), &[person_at(300.0, 500.0)]);
        }
        // An hour without frames (the camera was down), then someone
        // stands where the old object stood.
        let back = a.process(at(3_600_000), &[person_at(300.0, 500.0)]);
        let phases: Vec<(Phase, u64)> = back
            .events
            .iter()
            .map(|e| (e.phase, e.event.track_id))
            .collect();
        assert_eq!(phases, vec![(Phase::Closed, 1)], "the old event ends first");
        assert_eq!(
            back.events[0].event.end_ms,
            Some(400),
            "where it was last seen"
        );
        let next = a.process(at(3_600_200), &[person_at(300.0, 500.0)]);
        assert_eq!(next.events[0].phase, Phase::Opened);
        assert_eq!(next.events[0].event.track_id, 2);
        assert_eq!(next.counts[0].zone, "", "and it is counted");

        // A camera that sends nothing is closed by the caller's expire.
        assert!(a.expire(3_600_200 + 1_000).is_empty(), "not yet");
        let closed = a.expire(3_600_200 + 2_001);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].phase, Phase::Closed);
    }

    #[test]
    fn a_clock_stepped_back_never_ends_an_event_before_it_starts() {
        let mut a = analytics();
        for i in 0..3 {
            a.process(at(100_000 + 200 * i), &[person_at(300.0, 500.0)]);
        }
        for i in 0..3 {
            a.process(at(50_000 + 200 * i), &[person_at(300.0, 500.0)]);
        }
        let closed = a.finish();
        let event = &closed[0].event;
        assert!(event.end_ms.unwrap() >= event.start_ms, "{event:?}");
    }

    #[test]
    fn an_object_cut_off_by_the_bottom_edge_is_in_a_zone_drawn_to_it() {
        let mut a = analytics();
        a.process(at(0), &[person_at(700.0, 1000.0)]);
        let f = a.process(at(200), &[person_at(700.0, 1000.0)]);
        assert_eq!(f.events[0].event.zones, vec!["right_half".to_string()]);
    }

    #[test]
    fn a_line_crossed_while_the_track_was_confirmed_counts() {
        let mut a = analytics();
        // Appears left of the line (x = 400) and is across it by the frame
        // that confirms it.
        let mut crossings = Vec::new();
        for (i, x) in [380.0, 420.0, 460.0, 500.0].into_iter().enumerate() {
            crossings.extend(
                a.process(at(200 * i as i64), &[person_at(x, 500.0)])
                    .crossings,
            );
        }
        let dirs: Vec<Direction> = crossings.iter().map(|c| c.direction).collect();
        assert_eq!(dirs, vec![Direction::Out]);
    }
}
