//! ByteTrack's constant-velocity Kalman filter on `(cx, cy, aspect, height)`.
//!
//! Its motion model moves each measured quantity only by its own velocity,
//! and its noise is diagonal, so the 8x8 covariance stays four independent
//! 2x2 blocks forever. We keep just those blocks: the same filter, exactly,
//! without matrix code.

use crate::geometry::PixelBox;

/// Noise as a fraction of the box height, as in ByteTrack / DeepSORT.
const STD_POSITION: f32 = 1.0 / 20.0;
const STD_VELOCITY: f32 = 1.0 / 160.0;

/// One measured quantity and its velocity.
#[derive(Debug, Clone, Copy)]
struct Axis {
    value: f32,
    velocity: f32,
    /// Covariance `[[pp, pv], [pv, vv]]`.
    pp: f32,
    pv: f32,
    vv: f32,
}

impl Axis {
    fn new(value: f32, std_value: f32, std_velocity: f32) -> Self {
        Self {
            value,
            velocity: 0.0,
            pp: std_value * std_value,
            pv: 0.0,
            vv: std_velocity * std_velocity,
        }
    }

    fn predict(&mut self, q_value: f32, q_velocity: f32) {
        self.value += self.velocity;
        self.pp += 2.0 * self.pv + self.vv + q_value;
        self.pv += self.vv;
        self.vv += q_velocity;
    }

    fn update(&mut self, measured: f32, r: f32) {
        let s = self.pp + r;
        let (k_value, k_velocity) = (self.pp / s, self.pv / s);
        let innovation = measured - self.value;
        self.value += k_value * innovation;
        self.velocity += k_velocity * innovation;
        // P - K S K^T, written out for the 2x2 block.
        let (pp, pv) = (self.pp, self.pv);
        self.pp -= pp * pp / s;
        self.pv -= pp * pv / s;
        self.vv -= pv * pv / s;
    }
}

/// The motion state of one tracked box.
#[derive(Debug, Clone)]
pub struct BoxFilter {
    /// cx, cy, aspect (w/h), height.
    axes: [Axis; 4],
}

impl BoxFilter {
    pub fn new(b: &PixelBox) -> Self {
        let [cx, cy, a, h] = measure(b);
        let (p, v) = (2.0 * STD_POSITION * h, 10.0 * STD_VELOCITY * h);
        Self {
            axes: [
                Axis::new(cx, p, v),
                Axis::new(cy, p, v),
                Axis::new(a, 1e-2, 1e-5),
                Axis::new(h, p, v),
            ],
        }
    }

    /// Moves the state one frame ahead.
    pub fn predict(&mut self) {
        let h = self.axes[3].value;
        let (p, v) = (STD_POSITION * h, STD_VELOCITY * h);
        let noise = [(p, v), (p, v), (1e-2, 1e-5), (p, v)];
        for (axis, (p, v)) in self.axes.iter_mut().zip(noise) {
            axis.predict(p * p, v * v);
        }
    }

    /// Folds in a measured box.
    pub fn update(&mut self, b: &PixelBox) {
        let h = self.axes[3].value;
        let r = [STD_POSITION * h, STD_POSITION * h, 1e-1, STD_POSITION * h];
        for ((axis, z), r) in self.axes.iter_mut().zip(measure(b)).zip(r) {
            axis.update(z, r * r);
        }
    }

    /// The box the state predicts.
    pub fn bbox(&self) -> PixelBox {
        let [cx, cy, a, h] = self.axes.map(|a| a.value);
        let h = h.max(1e-3);
        let w = a * h;
        [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    }
}

fn measure(b: &PixelBox) -> [f32; 4] {
    let (w, h) = (b[2] - b[0], (b[3] - b[1]).max(1e-3));
    [(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, w / h, h]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_moving_steadily_is_predicted_ahead() {
        let mut f = BoxFilter::new(&[100.0, 100.0, 140.0, 200.0]);
        for step in 1..=10 {
            f.predict();
            let dx = 5.0 * step as f32;
            f.update(&[100.0 + dx, 100.0, 140.0 + dx, 200.0]);
        }
        f.predict();
        let b = f.bbox();
        // Ground truth for the next frame: moved to x0 = 155.
        assert!((b[0] - 155.0).abs() < 2.0, "{b:?}");
        assert!((b[3] - 200.0).abs() < 1.0, "{b:?}");
        assert!(((b[2] - b[0]) - 40.0).abs() < 1.0, "{b:?}");
    }

    #[test]
    fn a_still_box_stays_put_and_the_measurement_wins_over_time() {
        let b = [10.0, 20.0, 30.0, 60.0];
        let mut f = BoxFilter::new(&b);
        for _ in 0..5 {
            f.predict();
            f.update(&b);
        }
        let p = f.bbox();
        for (x, y) in p.iter().zip(b) {
            assert!((x - y).abs() < 1e-3, "{p:?}");
        }
    }
}
