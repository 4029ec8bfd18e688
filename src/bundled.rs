//! The small ONNX model bundled with corestream, for trying things without a download: the
//! `corestream bench`/`tune` default model and the embedding service's `--textnet` stand-in
//! load it from these bytes (so an installed binary needs no file from this repository).
//!
//! ExampleNet1 is IPEX's test network: one 3x3 convolution from 64 to 512 channels over a
//! (64, 3, 3) input, an input of shape `[batch, 64, 3, 3]` and an output of `[batch, 512]`
//! (float32). A linker drops the bytes from binaries that do not use them.
//!
//! ```
//! assert_eq!(corestream::bundled::EXAMPLENET1[0], 0x08); // an ONNX protobuf: ir_version first
//! ```

/// `assets/models/examplenet1.onnx`: ExampleNet1 as an ONNX file (295 KB).
pub static EXAMPLENET1: &[u8] = include_bytes!("../assets/models/examplenet1.onnx");
