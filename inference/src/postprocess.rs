//! Model output to detections: SSD box decoding and non-maximum suppression.

use crate::BoundingBox;

/// Decodes an SSD box encoding `(ty, tx, th, tw)` against its anchor
/// `(ymin, xmin, ymax, xmax)`, both normalised; `scales` are the box coder's
/// divisors (10, 10, 5, 5 for the TF Object Detection API). Returns the box as
/// normalised `(x0, y0, x1, y1)`.
pub fn decode_ssd_box(anchor: [f32; 4], code: [f32; 4], scales: [f32; 4]) -> BoundingBox {
    let [ymin, xmin, ymax, xmax] = anchor;
    let (ha, wa) = (ymax - ymin, xmax - xmin);
    let (yca, xca) = (ymin + ha * 0.5, xmin + wa * 0.5);
    let yc = code[0] / scales[0] * ha + yca;
    let xc = code[1] / scales[1] * wa + xca;
    let h = (code[2] / scales[2]).exp() * ha;
    let w = (code[3] / scales[3]).exp() * wa;
    BoundingBox {
        x0: xc - w * 0.5,
        y0: yc - h * 0.5,
        x1: xc + w * 0.5,
        y1: yc + h * 0.5,
    }
}

/// A scored box before suppression; `class` is the model's own class id.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub class: u32,
    pub score: f32,
    pub bbox: BoundingBox,
}

/// Which boxes compete in non-maximum suppression: each model family is
/// checked against its reference runtime, and the references differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppression {
    /// Any two boxes (SSD as TensorFlow runs it; darknet as OpenCV does).
    AcrossClasses,
    /// Only boxes of one class (Ultralytics' default): a helmet on a
    /// person, or a plate on a car, keeps both boxes.
    PerClass,
}

/// Greedy non-maximum suppression: keeps the best-scoring box, drops every
/// later box overlapping a kept one (of the same class, if `per class`) by
/// more than `iou_threshold`, and stops after `max_keep` boxes.
pub fn non_max_suppression(
    mut candidates: Vec<Candidate>,
    iou_threshold: f32,
    max_keep: usize,
    rule: Suppression,
) -> Vec<Candidate> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let competes = |k: &Candidate, c: &Candidate| match rule {
        Suppression::AcrossClasses => true,
        Suppression::PerClass => k.class == c.class,
    };
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() >= max_keep {
            break;
        }
        if kept
            .iter()
            .all(|k| !competes(k, &c) || k.bbox.iou(&c.bbox) <= iou_threshold)
        {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_code_decodes_to_the_anchor() {
        let b = decode_ssd_box([0.1, 0.2, 0.5, 0.6], [0.0; 4], [10.0, 10.0, 5.0, 5.0]);
        for (got, want) in [b.x0, b.y0, b.x1, b.y1].iter().zip([0.2, 0.1, 0.6, 0.5]) {
            assert!((got - want).abs() < 1e-6);
        }
    }

    #[test]
    fn code_shifts_and_scales_the_anchor() {
        // ty = 10 moves the centre down by one anchor height; th = 5 ln 2 doubles the height.
        let b = decode_ssd_box(
            [0.0, 0.0, 0.2, 0.2],
            [10.0, 0.0, 5.0 * 2f32.ln(), 0.0],
            [10.0, 10.0, 5.0, 5.0],
        );
        assert!(
            (b.y0 - 0.1).abs() < 1e-6 && (b.y1 - 0.5).abs() < 1e-6,
            "{b:?}"
        );
        assert!(
            (b.x0 - 0.0).abs() < 1e-6 && (b.x1 - 0.2).abs() < 1e-6,
            "{b:?}"
        );
    }

    #[test]
    fn nms_drops_overlaps_and_keeps_separate_boxes() {
        let c = |score, x0| Candidate {
            class: 1,
            score,
            bbox: BoundingBox {
                x0,
                y0: 0.0,
                x1: x0 + 10.0,
                y1: 10.0,
            },
        };
        let across = Suppression::AcrossClasses;
        let kept = non_max_suppression(
            vec![c(0.5, 1.0), c(0.9, 0.0), c(0.7, 50.0)],
            0.5,
            10,
            across,
        );
        let scores: Vec<f32> = kept.iter().map(|k| k.score).collect();
        assert_eq!(scores, vec![0.9, 0.7]);
        assert_eq!(
            non_max_suppression(vec![c(0.9, 0.0), c(0.7, 50.0)], 0.5, 1, across).len(),
            1
        );
        // A box of another class over a kept one: dropped across classes,
        // kept per class.
        let other = Candidate {
            class: 2,
            ..c(0.8, 1.0)
        };
        let both = vec![c(0.9, 0.0), other, c(0.6, 1.0)];
        assert_eq!(non_max_suppression(both.clone(), 0.5, 10, across).len(), 1);
        let per_class = non_max_suppression(both, 0.5, 10, Suppression::PerClass);
        let classes: Vec<u32> = per_class.iter().map(|k| k.class).collect();
        assert_eq!(classes, vec![1, 2]);
    }
}
