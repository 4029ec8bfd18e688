//! ndarray stand-ins for the anchor doc's ExampleNet1 and ExampleNet2: real 3x3 convolutions
//! (64 -> 128 channels, stride 2, padding 1, no bias) computed with im2col and a matrix product.
//! The ONNX versions arrive with the tract backend.
#![allow(dead_code)]

use corestream::ndarray::{s, Array2, Array4, ArrayView4, Axis};
use corestream::{BoxError, Module};

/// Conv2d(64, 128, 3x3, stride 2, padding 1, no bias) with deterministic weights.
pub struct Conv {
    /// (in_channels * 9, out_channels)
    weight: Array2<f32>,
}

impl Conv {
    pub fn new(seed: u32) -> Conv {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        let weight = Array2::from_shape_fn((64 * 9, 128), |_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state % 2000) as f32 / 1000.0 - 1.0
        });
        Conv { weight }
    }

    /// (B, 64, H, W) -> (B, 128, H', W')
    pub fn forward(&self, x: ArrayView4<'_, f32>) -> Result<Array4<f32>, BoxError> {
        let (b, c, h, w) = x.dim();
        if c != 64 {
            return Err(format!("expected 64 input channels, got {c}").into());
        }
        let (oh, ow) = ((h + 2 - 3) / 2 + 1, (w + 2 - 3) / 2 + 1);
        let mut cols = Array2::<f32>::zeros((b * oh * ow, c * 9));
        for n in 0..b {
            for i in 0..oh {
                for j in 0..ow {
                    let mut row = cols.row_mut((n * oh + i) * ow + j);
                    for ch in 0..c {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                let (y, x_) =
                                    ((2 * i + ki) as isize - 1, (2 * j + kj) as isize - 1);
                                if y >= 0 && x_ >= 0 && (y as usize) < h && (x_ as usize) < w {
                                    row[ch * 9 + ki * 3 + kj] = x[[n, ch, y as usize, x_ as usize]];
                                }
                            }
                        }
                    }
                }
            }
        }
        let out = cols.dot(&self.weight); // (b*oh*ow, 128)
        let out = out.into_shape_with_order((b, oh, ow, 128))?;
        Ok(out
            .permuted_axes([0, 3, 1, 2])
            .as_standard_layout()
            .to_owned())
    }
}

/// Flattens (B, ...) to (B, rest).
pub fn flatten(x: &Array4<f32>) -> Result<Array2<f32>, BoxError> {
    let b = x.len_of(Axis(0));
    Ok(x.to_shape((b, x.len() / b.max(1)))?.to_owned())
}

/// ExampleNet1: conv + flatten. (B, 64, 3, 3) -> (B, 512)
pub struct ExampleNet1 {
    conv: Conv,
}

impl ExampleNet1 {
    pub fn new() -> ExampleNet1 {
        ExampleNet1 { conv: Conv::new(1) }
    }
}

impl Module for ExampleNet1 {
    type Input = Array4<f32>;
    type Output = Array2<f32>;
    fn forward(&self, x: Array4<f32>) -> Result<Array2<f32>, BoxError> {
        flatten(&self.conv.forward(x.view())?)
    }
}

/// ExampleNet2 as the anchor doc writes it: two convs, returns `(y1, flatten(y1))` with
/// `y1 = conv(x1)`; `conv2(x2)` is computed and unused, exactly as in the doc.
pub struct ExampleNet2 {
    conv: Conv,
    conv2: Conv,
}

impl ExampleNet2 {
    pub fn new() -> ExampleNet2 {
        ExampleNet2 {
            conv: Conv::new(2),
            conv2: Conv::new(3),
        }
    }
}

impl Module for ExampleNet2 {
    type Input = (Array4<f32>, Array4<f32>);
    type Output = (Array4<f32>, Array2<f32>);
    fn forward(&self, (x1, x2): Self::Input) -> Result<Self::Output, BoxError> {
        let y1 = self.conv.forward(x1.view())?;
        let _y2 = self.conv2.forward(x2.view())?;
        let y = flatten(&y1)?;
        Ok((y1, y))
    }
}

/// A deterministic "random" (B, 64, 3, 3) input.
pub fn input(batch: usize, seed: usize) -> Array4<f32> {
    Array4::from_shape_fn((batch, 64, 3, 3), |(n, c, i, j)| {
        (((n * 31 + c * 7 + i * 3 + j + seed) % 97) as f32) / 97.0
    })
}

/// Largest absolute difference of two equally shaped arrays.
#[allow(dead_code)]
pub fn max_diff<D: corestream::ndarray::Dimension>(
    a: &corestream::ndarray::Array<f32, D>,
    b: &corestream::ndarray::Array<f32, D>,
) -> f32 {
    let _ = s![..];
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
