//! Plane geometry in normalised image coordinates: `(0, 0)` is the top-left
//! corner, `(1, 1)` the bottom-right, so zones survive a resolution change.

use serde::{Deserialize, Serialize};

use crate::AnalyticsError;

/// `[x, y]`, both in `0..=1`.
pub type Point = [f32; 2];

/// `[x0, y0, x1, y1]` in source pixels.
pub type PixelBox = [f32; 4];

/// Intersection over union of two pixel boxes (0 when either is empty).
pub fn iou(a: &PixelBox, b: &PixelBox) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

pub fn area(b: &PixelBox) -> f32 {
    (b[2] - b[0]).max(0.0) * (b[3] - b[1]).max(0.0)
}

/// Where an object stands: the middle of its box's bottom edge, normalised.
/// Zones on the ground are judged by it, not by the box's centre, which a
/// tall object pushes above the zone.
///
/// Kept just inside the frame: detectors clamp boxes to the image, so an
/// object cut off by the bottom edge stands at exactly 1.0, which the
/// even-odd test counts outside a zone drawn to that edge.
pub fn foot_point(b: &PixelBox, width: u32, height: u32) -> Point {
    const INSIDE: f32 = 1.0 - 1e-4;
    [
        ((b[0] + b[2]) * 0.5 / width.max(1) as f32).clamp(0.0, INSIDE),
        (b[3] / height.max(1) as f32).clamp(0.0, INSIDE),
    ]
}

/// A closed polygon (the last point joins the first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Point>", into = "Vec<Point>")]
pub struct Polygon(Vec<Point>);

impl Polygon {
    pub fn new(points: Vec<Point>) -> Result<Self, AnalyticsError> {
        if points.len() < 3 {
            return Err(AnalyticsError::Geometry(format!(
                "a polygon needs at least 3 points, got {}",
                points.len()
            )));
        }
        check_points(&points)?;
        Ok(Self(points))
    }

    pub fn points(&self) -> &[Point] {
        &self.0
    }

    /// Even-odd rule: a ray from `p` to the right crosses the edge an odd
    /// number of times exactly when `p` is inside. Works for concave shapes.
    pub fn contains(&self, p: Point) -> bool {
        let pts = &self.0;
        let mut inside = false;
        let mut j = pts.len() - 1;
        for i in 0..pts.len() {
            let ([xi, yi], [xj, yj]) = (pts[i], pts[j]);
            if (yi > p[1]) != (yj > p[1]) {
                let x_cross = xi + (p[1] - yi) * (xj - xi) / (yj - yi);
                if p[0] < x_cross {
                    inside = !inside;
                }
            }
            j = i;
        }
        inside
    }
}

impl TryFrom<Vec<Point>> for Polygon {
    type Error = AnalyticsError;
    fn try_from(points: Vec<Point>) -> Result<Self, Self::Error> {
        Self::new(points)
    }
}

impl From<Polygon> for Vec<Point> {
    fn from(p: Polygon) -> Self {
        p.0
    }
}

fn check_points(points: &[Point]) -> Result<(), AnalyticsError> {
    match points
        .iter()
        .find(|p| !p.iter().all(|c| (0.0..=1.0).contains(c)))
    {
        Some(p) => Err(AnalyticsError::Geometry(format!(
            "point {p:?} is outside the frame: coordinates are fractions of width and height, 0 to 1"
        ))),
        None => Ok(()),
    }
}

/// Which way an object crossed a line. Facing from the line's `from` point
/// towards its `to` point, `In` is a crossing from the left-hand side to the
/// right-hand side, `Out` the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

/// A directed segment objects are counted across.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub from: Point,
    pub to: Point,
}

impl Segment {
    pub fn new(from: Point, to: Point) -> Result<Self, AnalyticsError> {
        check_points(&[from, to])?;
        if from == to {
            return Err(AnalyticsError::Geometry(
                "a counting line needs two different points".into(),
            ));
        }
        Ok(Self { from, to })
    }

    /// Signed distance of `p` from the line through the segment, in frame
    /// units: positive on the right-hand side facing `from` → `to` (image y
    /// grows downwards).
    pub fn side(&self, p: Point) -> f32 {
        let (dx, dy) = (self.to[0] - self.from[0], self.to[1] - self.from[1]);
        let cross = dx * (p[1] - self.from[1]) - dy * (p[0] - self.from[0]);
        cross / (dx * dx + dy * dy).sqrt()
    }

    /// Whether the move `a → b` passes through the segment itself (not just
    /// the infinite line through it), and in which direction.
    pub fn crossing(&self, a: Point, b: Point) -> Option<Direction> {
        let (sa, sb) = (self.side(a), self.side(b));
        if sa == 0.0 || sb == 0.0 || (sa > 0.0) == (sb > 0.0) {
            return None;
        }
        // Where the move meets the line, as a fraction along the segment.
        let t = sa / (sa - sb);
        let hit = [a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])];
        let (dx, dy) = (self.to[0] - self.from[0], self.to[1] - self.from[1]);
        let along =
            ((hit[0] - self.from[0]) * dx + (hit[1] - self.from[1]) * dy) / (dx * dx + dy * dy);
        if !(0.0..=1.0).contains(&along) {
            return None;
        }
        Some(if sa < 0.0 {
            Direction::In
        } else {
            Direction::Out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 0.0, 20.0, 10.0]), 0.0);
        // Half overlap: 50 / (100 + 100 - 50).
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&[0.0; 4], &[0.0; 4]), 0.0);
    }

    #[test]
    fn foot_point_is_the_bottom_centre_normalised() {
        assert_eq!(
            foot_point(&[100.0, 50.0, 200.0, 300.0], 400, 600),
            [0.375, 0.5]
        );
    }

    #[test]
    fn polygon_contains_convex_and_concave() {
        let square = Polygon::new(vec![[0.1, 0.5], [0.6, 0.5], [0.6, 1.0], [0.1, 1.0]]).unwrap();
        assert!(square.contains([0.3, 0.7]));
        assert!(!square.contains([0.3, 0.4]));
        assert!(!square.contains([0.7, 0.7]));
        // An L shape: the notch at the top right is outside.
        let l = Polygon::new(vec![
            [0.0, 0.0],
            [0.5, 0.0],
            [0.5, 0.5],
            [1.0, 0.5],
            [1.0, 1.0],
            [0.0, 1.0],
        ])
        .unwrap();
        assert!(l.contains([0.25, 0.25]));
        assert!(l.contains([0.75, 0.75]));
        assert!(!l.contains([0.75, 0.25]));
    }

    #[test]
    fn bad_polygons_are_refused_with_a_reason() {
        let e = Polygon::new(vec![[0.0, 0.0], [1.0, 1.0]]).unwrap_err();
        assert!(e.to_string().contains("at least 3"), "{e}");
        let e = Polygon::new(vec![[0.0, 0.0], [1.5, 0.0], [0.0, 1.0]]).unwrap_err();
        assert!(e.to_string().contains("outside the frame"), "{e}");
        assert!(Segment::new([0.2, 0.2], [0.2, 0.2]).is_err());
    }

    #[test]
    fn crossing_direction_and_extent() {
        // A vertical line drawn downwards: its right-hand side is the
        // image's left (x smaller).
        let line = Segment::new([0.5, 0.2], [0.5, 0.8]).unwrap();
        assert!(line.side([0.4, 0.5]) > 0.0);
        assert_eq!(line.crossing([0.6, 0.5], [0.4, 0.5]), Some(Direction::In));
        assert_eq!(line.crossing([0.4, 0.5], [0.6, 0.5]), Some(Direction::Out));
        // Same side: no crossing.
        assert_eq!(line.crossing([0.6, 0.5], [0.7, 0.5]), None);
        // Passing the line's extension below its end does not count.
        assert_eq!(line.crossing([0.6, 0.9], [0.4, 0.9]), None);
        // A diagonal move through the segment counts.
        assert_eq!(line.crossing([0.6, 0.1], [0.4, 0.5]), Some(Direction::In));
    }
}
