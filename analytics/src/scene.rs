//! What a camera's analytics are told about its scene: zones, masks,
//! counting lines and per-label filters. All coordinates are normalised.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::geometry::{area, foot_point, PixelBox, Point, Polygon, Segment};
use crate::AnalyticsError;

/// A named area; objects are in it when their foot point is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    pub name: String,
    pub polygon: Polygon,
}

/// A named counting line; `in` is a crossing from the left to the right of
/// the arrow `from → to` (see [`crate::Direction`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "LineSpec")]
pub struct CountLine {
    pub name: String,
    pub segment: Segment,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineSpec {
    name: String,
    from: Point,
    to: Point,
}

impl TryFrom<LineSpec> for CountLine {
    type Error = AnalyticsError;
    fn try_from(s: LineSpec) -> Result<Self, Self::Error> {
        Ok(Self {
            name: s.name,
            segment: Segment::new(s.from, s.to)?,
        })
    }
}

/// Limits for one label. Areas are fractions of the frame (0-1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelFilter {
    /// Overrides the camera's `min_score` for this label.
    #[serde(default)]
    pub min_score: Option<f32>,
    #[serde(default)]
    pub min_area: f32,
    #[serde(default = "one")]
    pub max_area: f32,
}

fn one() -> f32 {
    1.0
}

impl Default for LabelFilter {
    fn default() -> Self {
        Self {
            min_score: None,
            min_area: 0.0,
            max_area: 1.0,
        }
    }
}

/// Everything a camera's analytics know about its scene.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scene {
    /// Labels to keep and track; empty keeps every label.
    pub labels: Vec<String>,
    /// Detections of at least this score are stored, shown and can start
    /// tracks (a label's filter may override it).
    pub min_score: f32,
    /// Lower-scoring detections down to this only keep live tracks going.
    pub track_min_score: f32,
    pub filters: BTreeMap<String, LabelFilter>,
    /// Detections standing in a mask are ignored entirely.
    pub masks: Vec<Polygon>,
    pub zones: Vec<Zone>,
    pub lines: Vec<CountLine>,
}

/// Lower-scoring boxes of an SSD-style detector are mostly noise even for
/// ByteTrack's second pass.
pub const DEFAULT_TRACK_MIN_SCORE: f32 = 0.2;

impl Scene {
    /// Checks names are unique and usable as count keys, and areas sane.
    pub fn validate(&self) -> Result<(), AnalyticsError> {
        let bad = |m: String| Err(AnalyticsError::Scene(m));
        let mut names = std::collections::HashSet::new();
        let zone_names = self.zones.iter().map(|z| ("zone", &z.name));
        let line_names = self.lines.iter().map(|l| ("line", &l.name));
        for (kind, name) in zone_names.chain(line_names) {
            if !valid_name(name) {
                return bad(format!(
                    "{kind} name {name:?}: use 1-64 letters, digits, '-' or '_'"
                ));
            }
            if !names.insert(name.as_str()) {
                return bad(format!(
                    "{kind} name {name:?} is used twice (zones and lines share names)"
                ));
            }
        }
        for (label, f) in &self.filters {
            if !(0.0..=1.0).contains(&f.min_area) || !(0.0..=1.0).contains(&f.max_area) {
                return bad(format!(
                    "filters.{label}: areas are fractions of the frame, 0 to 1"
                ));
            }
            if f.min_area > f.max_area {
                return bad(format!("filters.{label}: min_area is above max_area"));
            }
            if f.min_score.is_some_and(|s| !(0.0..=1.0).contains(&s)) {
                return bad(format!(
                    "filters.{label}: min_score must be between 0 and 1"
                ));
            }
        }
        Ok(())
    }

    /// The score from which detections of `label` count as confident.
    pub fn confident_from(&self, label: &str) -> f32 {
        self.filters
            .get(label)
            .and_then(|f| f.min_score)
            .unwrap_or(self.min_score)
    }

    /// Whether a detection enters analytics at all: a wanted label, a
    /// plausible size, outside every mask, not below the tracking floor.
    pub fn admits(
        &self,
        label: &str,
        score: f32,
        bbox: &PixelBox,
        width: u32,
        height: u32,
    ) -> bool {
        if !self.labels.is_empty() && !self.labels.iter().any(|l| l == label) {
            return false;
        }
        if score < self.track_min_score.min(self.confident_from(label)) {
            return false;
        }
        if let Some(f) = self.filters.get(label) {
            let fraction = area(bbox) / (width.max(1) as f32 * height.max(1) as f32);
            if fraction < f.min_area || fraction > f.max_area {
                return false;
            }
        }
        let foot = foot_point(bbox, width, height);
        !self.masks.iter().any(|m| m.contains(foot))
    }

    /// Names of the zones containing `foot`, in configuration order.
    pub fn zones_at(&self, foot: Point) -> impl Iterator<Item = &str> {
        self.zones
            .iter()
            .filter(move |z| z.polygon.contains(foot))
            .map(|z| z.name.as_str())
    }
}

/// Zone and line names end up in URLs and count keys.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene() -> Scene {
        Scene {
            labels: vec!["person".into(), "car".into()],
            min_score: 0.5,
            track_min_score: 0.2,
            filters: BTreeMap::from([(
                "car".into(),
                LabelFilter {
                    min_score: Some(0.7),
                    min_area: 0.01,
                    max_area: 0.5,
                },
            )]),
            masks: vec![
                Polygon::new(vec![[0.0, 0.0], [0.3, 0.0], [0.3, 0.3], [0.0, 0.3]]).unwrap(),
            ],
            zones: vec![Zone {
                name: "driveway".into(),
                polygon: Polygon::new(vec![[0.5, 0.5], [1.0, 0.5], [1.0, 1.0], [0.5, 1.0]])
                    .unwrap(),
            }],
            lines: vec![],
        }
    }

    #[test]
    fn filters_labels_scores_areas_and_masks() {
        let s = scene();
        let (w, h) = (1000, 1000);
        let person = [600.0, 400.0, 650.0, 600.0];
        assert!(
            s.admits("person", 0.3, &person, w, h),
            "low scores feed tracking"
        );
        assert!(!s.admits("person", 0.1, &person, w, h));
        assert!(!s.admits("dog", 0.9, &person, w, h), "unlisted label");
        // Standing in the mask (top-left): ignored, even if the box reaches out.
        assert!(!s.admits("person", 0.9, &[100.0, 50.0, 150.0, 250.0], w, h));
        // A car: 2 % of the frame passes, 0.1 % and 64 % do not.
        assert!(s.admits("car", 0.9, &[0.0, 500.0, 200.0, 600.0], w, h));
        assert!(!s.admits("car", 0.9, &[0.0, 500.0, 10.0, 600.0], w, h));
        assert!(!s.admits("car", 0.9, &[0.0, 200.0, 800.0, 1000.0], w, h));
        assert_eq!(s.confident_from("car"), 0.7);
        assert_eq!(s.confident_from("person"), 0.5);
    }

    #[test]
    fn zones_by_foot_point() {
        let s = scene();
        assert_eq!(s.zones_at([0.7, 0.9]).collect::<Vec<_>>(), vec!["driveway"]);
        assert_eq!(s.zones_at([0.7, 0.4]).count(), 0);
    }

    #[test]
    fn names_and_areas_are_validated() {
        let mut s = scene();
        assert!(s.validate().is_ok());
        s.lines.push(CountLine {
            name: "driveway".into(),
            segment: Segment::new([0.1, 0.1], [0.2, 0.2]).unwrap(),
        });
        assert!(s.validate().unwrap_err().to_string().contains("used twice"));
        s.lines[0].name = "gate:in".into();
        assert!(s.validate().unwrap_err().to_string().contains("letters"));
        let mut s = scene();
        s.filters.get_mut("car").unwrap().min_area = 0.9;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("above max_area"));
    }
}
