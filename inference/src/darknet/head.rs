//! Decoding a darknet `[yolo]` layer's raw map into candidate rows.

use candle_core::{DType, Tensor};
use rayon::prelude::*;

use crate::ops::{sigmoid_tensor, Activation};

/// A `[yolo]` layer: its anchors and the shape of its map.
pub(super) struct YoloHead {
    /// `[1, A, 1, 2]` anchor sizes in input pixels.
    pub anchors: Tensor,
    /// Anchors (`A`).
    pub count: usize,
    pub classes: usize,
    pub scale_x_y: f32,
}

/// Grid cells whose rows `decode_cpu` fills together.
const CELLS_AT_ONCE: usize = 16;

impl YoloHead {
    /// Turns the raw map `[N, A * (5 + C), H, W]` of an `in_w` x `in_h`
    /// input into rows of `(cx, cy, w, h, scores...)` in input pixels.
    pub fn decode(&self, x: &Tensor, in_w: usize, in_h: usize) -> candle_core::Result<Tensor> {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            self.decode_cpu(x, in_w, in_h)
        } else {
            self.decode_tensor(x, in_w, in_h)
        }
    }

    /// `decode` in one pass over the map, in parallel over images and
    /// anchors, with the vectorised sigmoid: candle's chain of element-wise
    /// ops on strided views took about 6 ns a value here, over a
    /// millisecond a frame for YOLOv3-tiny's two heads.
    fn decode_cpu(&self, x: &Tensor, in_w: usize, in_h: usize) -> candle_core::Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let (count, classes, scale) = (self.count, self.classes, self.scale_x_y);
        let (plane, depth, width) = (h * w, 5 + classes, 4 + classes);
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let anchors = self.anchors.flatten_all()?.to_vec1::<f32>()?;
        let (cell_w, cell_h) = (in_w as f32 / w as f32, in_h as f32 / h as f32);
        let shift = -0.5 * (scale - 1.0);
        let mut rows = vec![0f32; n * count * plane * width];
        rows.par_chunks_mut(plane * width)
            .zip(data.par_chunks(depth * plane))
            .enumerate()
            .for_each(|(map_index, (rows, map))| {
                let anchor = 2 * (map_index % count);
                let (anchor_w, anchor_h) = (anchors[anchor], anchors[anchor + 1]);
                let sigmoid = |k: usize| {
                    let mut values = map[k * plane..][..plane].to_vec();
                    Activation::Sigmoid.apply_slice(&mut values);
                    values
                };
                let (tx, ty, objectness) = (sigmoid(0), sigmoid(1), sigmoid(4));
                for (i, row) in rows.chunks_exact_mut(width).enumerate() {
                    let (gx, gy) = ((i % w) as f32, (i / w) as f32);
                    row[0] = (tx[i] * scale + shift + gx) * cell_w;
                    row[1] = (ty[i] * scale + shift + gy) * cell_h;
                    row[2] = map[2 * plane + i].exp() * anchor_w;
                    row[3] = map[3 * plane + i].exp() * anchor_h;
                }
                let mut scores = map[5 * plane..][..classes * plane].to_vec();
                Activation::Sigmoid.apply_slice(&mut scores);
                // A few cells at a time, so that the rows written stay in L1
                // while each class's plane is read along them.
                for start in (0..plane).step_by(CELLS_AT_ONCE) {
                    let cells = start..(start + CELLS_AT_ONCE).min(plane);
                    let rows = &mut rows[cells.start * width..cells.end * width];
                    let objectness = &objectness[cells.clone()];
                    for class in 0..classes {
                        let scores = &scores[class * plane..][cells.clone()];
                        let column = rows[4 + class..].iter_mut().step_by(width);
                        for ((score, v), o) in column.zip(scores).zip(objectness) {
                            *score = v * o;
                        }
                    }
                }
            });
        Tensor::from_vec(rows, (n, count * plane, width), x.device())
    }

    /// `decode` with candle's ops, for devices without the CPU loop.
    fn decode_tensor(&self, x: &Tensor, in_w: usize, in_h: usize) -> candle_core::Result<Tensor> {
        let (n, _, h, w) = x.dims4()?;
        let (count, classes, scale) = (self.count, self.classes, self.scale_x_y);
        let x = x
            .reshape((n, count, 5 + classes, h * w))?
            .transpose(2, 3)?
            .contiguous()?; // [N, A, HW, 5 + C]
        let grid: Vec<f32> = (0..h * w)
            .flat_map(|i| [(i % w) as f32, (i / w) as f32])
            .collect();
        let grid = Tensor::from_vec(grid, (1, 1, h * w, 2), x.device())?.to_dtype(x.dtype())?;
        let cell = Tensor::new(
            &[in_w as f32 / w as f32, in_h as f32 / h as f32],
            x.device(),
        )?
        .to_dtype(x.dtype())?
        .reshape((1, 1, 1, 2))?;
        let shift = -0.5 * (scale as f64 - 1.0);
        let xy = sigmoid_tensor(&x.narrow(3, 0, 2)?)?
            .affine(scale as f64, shift)?
            .broadcast_add(&grid)?
            .broadcast_mul(&cell)?;
        let wh = x.narrow(3, 2, 2)?.exp()?.broadcast_mul(&self.anchors)?;
        let objectness = sigmoid_tensor(&x.narrow(3, 4, 1)?)?;
        let scores = sigmoid_tensor(&x.narrow(3, 5, classes)?)?.broadcast_mul(&objectness)?;
        Tensor::cat(&[xy, wh, scores], 3)?.reshape((n, count * h * w, 4 + classes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn decodes_centres_sizes_and_scores() -> candle_core::Result<()> {
        // One anchor (20 x 10 px), one class, a 2x2 grid on a 64x64 input;
        // all logits zero: sigmoid 0.5 puts each centre mid-cell.
        let dev = Device::Cpu;
        let head = YoloHead {
            anchors: Tensor::new(&[20f32, 10.0], &dev)?.reshape((1, 1, 1, 2))?,
            count: 1,
            classes: 1,
            scale_x_y: 1.0,
        };
        let x = Tensor::zeros((1, 6, 2, 2), DType::F32, &dev)?;
        for rows in [
            head.decode_cpu(&x, 64, 64)?,
            head.decode_tensor(&x, 64, 64)?,
        ] {
            let rows = rows.squeeze(0)?.to_vec2::<f32>()?;
            assert_eq!(rows[0], vec![16.0, 16.0, 20.0, 10.0, 0.25]);
            assert_eq!(rows[3], vec![48.0, 48.0, 20.0, 10.0, 0.25]);
        }
        Ok(())
    }

    /// The CPU loop and candle's ops decode the same: several images and
    /// anchors, a non-square grid, `scale_x_y` above 1.
    #[test]
    fn cpu_decode_matches_tensor_decode() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let head = YoloHead {
            anchors: Tensor::new(&[10f32, 14.0, 23.0, 27.0, 37.0, 58.0], &dev)?
                .reshape((1, 3, 1, 2))?,
            count: 3,
            classes: 4,
            scale_x_y: 1.05,
        };
        let x = Tensor::randn(0f32, 2., (2, 3 * (5 + 4), 5, 7), &dev)?;
        let ours = head.decode_cpu(&x, 224, 160)?;
        let theirs = head.decode_tensor(&x, 224, 160)?;
        assert_eq!(ours.dims(), theirs.dims());
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "largest difference {diff}");
        Ok(())
    }
}
