//! Agreement between two detectors' outputs: mean average precision, one
//! set of detections taken as ground truth.

use std::collections::BTreeSet;

use crate::Detection;

/// mAP at `iou_threshold`: for each label the ground truth holds, the
/// all-point interpolated area under the precision/recall curve of
/// `predictions` (ranked by score, each matched greedily to the unmatched
/// truth box of its image it overlaps most), averaged over those labels.
/// Both slices hold one list per image, in the same order. 1.0 when there
/// is no truth at all and nothing predicted.
pub fn mean_average_precision(
    truth: &[Vec<Detection>],
    predictions: &[Vec<Detection>],
    iou_threshold: f32,
) -> f32 {
    assert_eq!(
        truth.len(),
        predictions.len(),
        "one list per image on both sides"
    );
    let labels: BTreeSet<&str> = truth.iter().flatten().map(|d| d.label.as_str()).collect();
    if labels.is_empty() {
        return if predictions.iter().all(Vec::is_empty) {
            1.0
        } else {
            0.0
        };
    }
    let total: f32 = labels
        .iter()
        .map(|label| average_precision(truth, predictions, label, iou_threshold))
        .sum();
    total / labels.len() as f32
}

fn average_precision(
    truth: &[Vec<Detection>],
    predictions: &[Vec<Detection>],
    label: &str,
    iou_threshold: f32,
) -> f32 {
    let mut ranked: Vec<(usize, &Detection)> = predictions
        .iter()
        .enumerate()
        .flat_map(|(i, ds)| ds.iter().filter(|d| d.label == label).map(move |d| (i, d)))
        .collect();
    ranked.sort_by(|a, b| b.1.score.total_cmp(&a.1.score));
    let positives = truth.iter().flatten().filter(|d| d.label == label).count();
    let mut matched: Vec<Vec<bool>> = truth.iter().map(|t| vec![false; t.len()]).collect();
    // (recall, precision) after each prediction.
    let mut curve = Vec::with_capacity(ranked.len());
    let mut hits = 0usize;
    for (rank, (image, p)) in ranked.iter().enumerate() {
        let best = truth[*image]
            .iter()
            .enumerate()
            .filter(|(j, t)| t.label == label && !matched[*image][*j])
            .map(|(j, t)| (j, t.bbox.iou(&p.bbox)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((j, iou)) = best {
            if iou >= iou_threshold {
                matched[*image][j] = true;
                hits += 1;
            }
        }
        curve.push((
            hits as f32 / positives as f32,
            hits as f32 / (rank + 1) as f32,
        ));
    }
    // Precision envelope from the right, integrated over recall steps.
    let mut area = 0.0;
    let mut best_precision = 0.0f32;
    let mut next_recall = curve.last().map_or(0.0, |c| c.0);
    for &(recall, precision) in curve.iter().rev() {
        area += (next_recall - recall) * best_precision;
        best_precision = best_precision.max(precision);
        next_recall = recall;
    }
    area + next_recall * best_precision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoundingBox;

    fn det(label: &str, score: f32, x0: f32) -> Detection {
        Detection {
            label: label.into(),
            score,
            bbox: BoundingBox::from([x0, 0.0, x0 + 10.0, 10.0]),
        }
    }

    #[test]
    fn identical_lists_score_one_and_misses_lower_it() {
        let truth = vec![
            vec![det("car", 0.9, 0.0), det("car", 0.8, 50.0)],
            vec![det("dog", 0.7, 0.0)],
        ];
        assert_eq!(mean_average_precision(&truth, &truth, 0.5), 1.0);
        // One of two cars missed: car AP 0.5, dog AP 1.
        let missing = vec![vec![det("car", 0.9, 0.0)], vec![det("dog", 0.7, 0.0)]];
        assert!((mean_average_precision(&truth, &missing, 0.5) - 0.75).abs() < 1e-6);
        // A false positive ranked first halves the precision of the first hit.
        let mut noisy = truth.clone();
        noisy[1].push(det("dog", 0.99, 200.0));
        let map = mean_average_precision(&truth, &noisy, 0.5);
        assert!((map - 0.75).abs() < 1e-6, "{map}");
        // Shifted boxes do not count.
        let shifted = vec![
            vec![det("car", 0.9, 6.0), det("car", 0.8, 56.0)],
            vec![det("dog", 0.7, 6.0)],
        ];
        assert_eq!(mean_average_precision(&truth, &shifted, 0.5), 0.0);
    }
}
