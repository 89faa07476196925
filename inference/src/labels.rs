//! COCO class names.
//!
//! Models trained with the TensorFlow Object Detection API number COCO classes
//! 1..=90 with ten ids unused ("COCO-91"); darknet models number the 80 used
//! classes 0..=79. Both map to the same 80 names (darknet's `coco.names`), so
//! every model reports the same label for the same kind of object.

const COCO80: &str = include_str!("coco80.names");

/// The COCO-91 ids that no class uses.
const COCO91_UNUSED: [u32; 10] = [12, 26, 29, 30, 45, 66, 68, 69, 71, 83];

/// The 80 COCO class names in darknet order.
pub fn coco80() -> impl Iterator<Item = &'static str> {
    COCO80.lines().map(str::trim).filter(|l| !l.is_empty())
}

/// The name of COCO-80 class `index` (0-based), if any.
pub fn coco80_label(index: usize) -> Option<&'static str> {
    coco80().nth(index)
}

/// The name of COCO-91 class `id` (1-based, with gaps), if the id is used.
pub fn coco91_label(id: u32) -> Option<&'static str> {
    if id == 0 || id > 90 || COCO91_UNUSED.contains(&id) {
        return None;
    }
    let gaps_below = COCO91_UNUSED.iter().filter(|&&g| g < id).count() as u32;
    coco80_label((id - 1 - gaps_below) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco91_ids_map_onto_the_80_names() {
        assert_eq!(coco80().count(), 80);
        assert_eq!(coco91_label(1), Some("person"));
        assert_eq!(coco91_label(4), Some("motorbike"));
        assert_eq!(coco91_label(12), None);
        assert_eq!(coco91_label(13), Some("stop sign"));
        assert_eq!(coco91_label(37), Some("sports ball"));
        assert_eq!(coco91_label(90), Some("toothbrush"));
        let used = (1..=90).filter_map(coco91_label).count();
        assert_eq!(used, 80);
    }
}
