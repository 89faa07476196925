//! Darknet `.weights` files: a small header, then every convolution's
//! parameters as raw little-endian f32, in layer order.

use candle_core::{Device, Tensor};

/// Darknet's inference-time batch norm divides by `sqrt(var) + 1e-6`.
const BN_EPSILON: f32 = 1e-6;

/// Reads the f32 stream after the header, one layer at a time.
pub struct WeightStream {
    values: Vec<f32>,
    position: usize,
}

/// Why a `.weights` file does not fit its `.cfg`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WeightsError {
    #[error("file ends inside its header ({0} bytes)")]
    ShortHeader(usize),
    #[error("layer {layer} needs {needed} more values but only {left} are left")]
    Truncated {
        layer: usize,
        needed: usize,
        left: usize,
    },
    #[error("{0} values are left over after the last layer: the file belongs to another .cfg")]
    LeftOver(usize),
}

impl WeightStream {
    /// Skips the header (version, and the images-seen counter whose width
    /// depends on the version) and takes the rest as f32s.
    pub fn new(bytes: &[u8]) -> Result<Self, WeightsError> {
        let word = |i: usize| -> Option<i32> {
            Some(i32::from_le_bytes(
                bytes.get(i * 4..i * 4 + 4)?.try_into().ok()?,
            ))
        };
        let (Some(major), Some(minor)) = (word(0), word(1)) else {
            return Err(WeightsError::ShortHeader(bytes.len()));
        };
        // Darknet's own test, in i64 so a hostile header cannot overflow it.
        let version = i64::from(major) * 10 + i64::from(minor);
        let seen_bytes = if version >= 2 && major < 1000 && minor < 1000 {
            8
        } else {
            4
        };
        let header = 12 + seen_bytes;
        let body = bytes
            .get(header..)
            .ok_or(WeightsError::ShortHeader(bytes.len()))?;
        let values = body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self {
            values,
            position: 0,
        })
    }

    fn take(&mut self, layer: usize, n: usize) -> Result<&[f32], WeightsError> {
        let left = self.values.len() - self.position;
        if n > left {
            return Err(WeightsError::Truncated {
                layer,
                needed: n,
                left,
            });
        }
        let out = &self.values[self.position..self.position + n];
        self.position += n;
        Ok(out)
    }

    /// One convolution's weight `[filters, channels, size, size]` and bias,
    /// with its batch norm (if any) folded in.
    pub fn convolution(
        &mut self,
        layer: usize,
        filters: usize,
        channels: usize,
        size: usize,
        batch_normalize: bool,
        device: &Device,
    ) -> Result<(Tensor, Tensor), ConvLoadError> {
        let mut bias = self.take(layer, filters)?.to_vec();
        let fold = if batch_normalize {
            let scales = self.take(layer, filters)?.to_vec();
            let means = self.take(layer, filters)?.to_vec();
            let variances = self.take(layer, filters)?.to_vec();
            let factors: Vec<f32> = scales
                .iter()
                .zip(&variances)
                .map(|(s, v)| s / (v.sqrt() + BN_EPSILON))
                .collect();
            for ((b, m), f) in bias.iter_mut().zip(&means).zip(&factors) {
                *b -= m * f;
            }
            Some(factors)
        } else {
            None
        };
        // A hostile .cfg can ask for more values than any file holds.
        let per_filter = channels.saturating_mul(size).saturating_mul(size);
        let mut weight = self
            .take(layer, filters.saturating_mul(per_filter))?
            .to_vec();
        if let Some(factors) = fold {
            for (row, f) in weight.chunks_exact_mut(per_filter.max(1)).zip(factors) {
                row.iter_mut().for_each(|w| *w *= f);
            }
        }
        Ok((
            Tensor::from_vec(weight, (filters, channels, size, size), device)?,
            Tensor::from_vec(bias, filters, device)?,
        ))
    }

    /// Fails unless every value was used.
    pub fn finish(self) -> Result<(), WeightsError> {
        match self.values.len() - self.position {
            0 => Ok(()),
            n => Err(WeightsError::LeftOver(n)),
        }
    }
}

/// Loading one convolution can fail on the file or on the device.
#[derive(Debug, thiserror::Error)]
pub enum ConvLoadError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Tensor(#[from] candle_core::Error),
    /// The `.cfg`'s fault: darknet and OpenCV refuse such a file too.
    #[error(
        "layer {layer} ([yolo]) gets {found} channels but {anchors} anchors x (5 + {classes} \
         classes) need {needed}: set filters={needed} in the [convolutional] before it"
    )]
    YoloChannels {
        layer: usize,
        found: usize,
        anchors: usize,
        classes: usize,
        needed: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(major: i32, minor: i32, values: &[f32]) -> Vec<u8> {
        let mut bytes: Vec<u8> = [major, minor, 0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let new_header = i64::from(major) * 10 + i64::from(minor) >= 2 && major < 1000;
        let seen = if new_header { 8 } else { 4 };
        bytes.extend(std::iter::repeat_n(0u8, seen));
        bytes.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        bytes
    }

    #[test]
    fn folds_batch_norm_into_weight_and_bias() {
        // One filter, one channel, 1x1: bias 0.5, scale 2, mean 1, var 4, weight 3.
        let bytes = file(0, 2, &[0.5, 2.0, 1.0, 4.0, 3.0]);
        let mut s = WeightStream::new(&bytes).unwrap();
        let (w, b) = s.convolution(0, 1, 1, 1, true, &Device::Cpu).unwrap();
        let f = 2.0 / (2.0 + BN_EPSILON);
        let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = b.to_vec1::<f32>().unwrap();
        assert!((w[0] - 3.0 * f).abs() < 1e-6 && (b[0] - (0.5 - f)).abs() < 1e-6);
        s.finish().unwrap();
    }

    #[test]
    fn old_headers_have_a_narrow_counter_and_sizes_are_checked() {
        let bytes = file(0, 1, &[1.0, 2.0]);
        let mut s = WeightStream::new(&bytes).unwrap();
        let (_, b) = s.convolution(0, 1, 1, 1, false, &Device::Cpu).unwrap();
        assert_eq!(b.to_vec1::<f32>().unwrap(), vec![1.0]);
        s.finish().unwrap();

        let mut s = WeightStream::new(&file(0, 2, &[1.0])).unwrap();
        let err = s.convolution(3, 1, 1, 1, false, &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("layer 3"), "{err}");
        let s = WeightStream::new(&file(0, 2, &[1.0])).unwrap();
        assert_eq!(s.finish(), Err(WeightsError::LeftOver(1)));
        assert!(WeightStream::new(&[0u8; 6]).is_err());
    }

    #[test]
    fn hostile_headers_and_layer_sizes_are_errors_not_overflows() {
        // major * 10 overflows an i32; the header is still read.
        assert!(WeightStream::new(&file(i32::MAX, i32::MAX, &[])).is_ok());
        // filters * channels * size * size overflows a usize.
        let mut s = WeightStream::new(&file(0, 2, &[0.0; 8])).unwrap();
        let err = s
            .convolution(0, 2, usize::MAX / 2, usize::MAX / 2, false, &Device::Cpu)
            .unwrap_err();
        assert!(err.to_string().contains("layer 0"), "{err}");
    }
}
