//! The few fields of an ONNX file the `ort` backend needs to share weights between sessions:
//! the top graph's initialisers (name, element type, dims, external data location); inline
//! data is skipped. A minimal
//! protobuf reader; everything else in the file is skipped.

/// One initialiser of the top graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Initializer {
    pub(crate) name: String,
    /// ONNX `TensorProto.DataType` (1 float, 2 uint8, 6 int32, 7 int64, 9 bool, 11 double...).
    pub(crate) data_type: i32,
    pub(crate) dims: Vec<i64>,
    /// `external_data`: (location, offset, length).
    pub(crate) external: Option<(String, usize, Option<usize>)>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    /// The next field: (number, wire type).
    fn key(&mut self) -> Result<(u64, u8), String> {
        let k = self.varint()?;
        Ok((k >> 3, (k & 7) as u8))
    }

    /// A length-delimited field's (start, end) in the buffer.
    fn span(&mut self) -> Result<(usize, usize), String> {
        let len = usize::try_from(self.varint()?).map_err(|_| "length overflow")?;
        let start = self.pos;
        let end = start.checked_add(len).ok_or("length overflow")?;
        if end > self.buf.len() {
            return Err("truncated field".into());
        }
        self.pos = end;
        Ok((start, end))
    }

    fn skip(&mut self, wire: u8) -> Result<(), String> {
        match wire {
            0 => {
                self.varint()?;
            }
            1 => self.pos += 8,
            2 => {
                self.span()?;
            }
            5 => self.pos += 4,
            w => return Err(format!("unsupported wire type {w}")),
        }
        if self.pos > self.buf.len() {
            return Err("truncated field".into());
        }
        Ok(())
    }
}

fn string(buf: &[u8], (a, b): (usize, usize)) -> Result<String, String> {
    String::from_utf8(buf[a..b].to_vec()).map_err(|e| e.to_string())
}

/// The top graph's initialisers of an ONNX `ModelProto`.
pub(crate) fn initializers(model: &[u8]) -> Result<Vec<Initializer>, String> {
    let mut r = Reader::new(model);
    let mut out = Vec::new();
    while !r.done() {
        match r.key()? {
            (7, 2) => {
                let (a, b) = r.span()?;
                graph_initializers(&model[a..b], &mut out)?;
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(out)
}

fn graph_initializers(graph: &[u8], out: &mut Vec<Initializer>) -> Result<(), String> {
    let mut r = Reader::new(graph);
    while !r.done() {
        match r.key()? {
            (5, 2) => {
                let (a, b) = r.span()?;
                out.push(tensor(&graph[a..b])?);
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    Ok(())
}

fn tensor(buf: &[u8]) -> Result<Initializer, String> {
    let mut r = Reader::new(buf);
    let mut t = Initializer::default();
    let mut ext: Vec<(String, String)> = Vec::new();
    while !r.done() {
        match r.key()? {
            (1, 0) => t.dims.push(r.varint()? as i64),
            (1, 2) => {
                let (a, b) = r.span()?;
                let mut p = Reader::new(&buf[a..b]);
                while !p.done() {
                    t.dims.push(p.varint()? as i64);
                }
            }
            (2, 0) => t.data_type = r.varint()? as i32,
            (8, 2) => t.name = string(buf, r.span()?)?,
            (13, 2) => {
                let (a, b) = r.span()?;
                let mut e = Reader::new(&buf[a..b]);
                let (mut key, mut value) = (String::new(), String::new());
                while !e.done() {
                    match e.key()? {
                        (1, 2) => key = string(&buf[a..b], e.span()?)?,
                        (2, 2) => value = string(&buf[a..b], e.span()?)?,
                        (_, wire) => e.skip(wire)?,
                    }
                }
                ext.push((key, value));
            }
            (_, wire) => r.skip(wire)?,
        }
    }
    if !ext.is_empty() {
        let get = |k: &str| ext.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let location = get("location").ok_or("external data without a location")?;
        let offset = get("offset").map_or(Ok(0), |v| v.parse::<usize>());
        let length = get("length").map(|v| v.parse::<usize>()).transpose();
        t.external = Some((
            location,
            offset.map_err(|e| e.to_string())?,
            length.map_err(|e| e.to_string())?,
        ));
    }
    Ok(t)
}
