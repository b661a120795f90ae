//! The chunked transfer coding's reading side (RFC 9112 §7.1): one streaming state
//! machine, [`Decoder`], for every chunked body writeguard reads. The framing checker runs
//! it over each chunked request body before hyper or the native engine parse it; the native
//! engine also decodes request and upstream answer bodies with it. Chunk sizes, extensions
//! and line ends are checked byte by byte; trailer fields are held to the grammar hyper
//! holds them to (httparse's header rules, at most 100 fields), so that what hyper would
//! refuse is refused here first, with a clear [`Violation`]. Extensions and trailers are
//! read and dropped, never forwarded. Bytes in, verdicts out; no I/O, no allocation.

use super::{Violation, MAX_CHUNK_EXTENSIONS, MAX_TRAILERS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { size: u64, digits: u8 },
    SizeWs { size: u64 },
    Ext { size: u64 },
    SizeLf { size: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// One chunked body being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoder {
    state: State,
    /// Extension (then trailer) bytes seen.
    budget: usize,
    /// Trailer fields seen.
    trailers: u8,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size { size: 0, digits: 0 },
            budget: 0,
            trailers: 0,
        }
    }
}

/// What [`Decoder::decode`] did with its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes used (all of them unless `done`).
    pub used: usize,
    /// The body's last byte was among them.
    pub done: bool,
}

impl Decoder {
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `input`, handing each run of data bytes to `data` in order.
    pub fn decode(&mut self, input: &[u8], data: impl FnMut(&[u8])) -> Result<Decoded, Violation> {
        self.read(input, data).map_err(|(_, violation)| violation)
    }

    /// The same, saying at which byte of `input` a refusal comes.
    pub fn read(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<Decoded, (usize, Violation)> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Data(n) => {
                    let take = n.min((input.len() - pos) as u64) as usize;
                    data(&input[pos..pos + take]);
                    pos += take;
                    let rest = n - take as u64;
                    self.state = if rest == 0 {
                        State::DataCr
                    } else {
                        State::Data(rest)
                    };
                }
                _ => {
                    self.byte(input[pos]).map_err(|v| (pos, v))?;
                    pos += 1;
                }
            }
        }
        Ok(Decoded {
            used: pos,
            done: self.state == State::Done,
        })
    }

    /// One byte of a chunk-size line, chunk delimiter or trailer section.
    fn byte(&mut self, b: u8) -> Result<(), Violation> {
        use State::*;
        use Violation::*;
        let ext = MAX_CHUNK_EXTENSIONS;
        self.state = match self.state {
            Size { size, digits } => match b {
                _ if b.is_ascii_hexdigit() => {
                    if digits == 16 {
                        return Err(ChunkSize);
                    }
                    let v = (b as char).to_digit(16).unwrap_or(0);
                    Size {
                        size: size << 4 | u64::from(v),
                        digits: digits + 1,
                    }
                }
                _ if digits == 0 => return Err(ChunkSize),
                b' ' | b'\t' => self.spend(ext, ChunkExtensionsTooLong, SizeWs { size })?,
                b';' => self.spend(ext, ChunkExtensionsTooLong, Ext { size })?,
                b'\r' => SizeLf { size },
                b'\n' => return Err(BareLf),
                _ => return Err(ChunkSize),
            },
            SizeWs { size } => match b {
                b' ' | b'\t' => self.spend(ext, ChunkExtensionsTooLong, SizeWs { size })?,
                b';' => self.spend(ext, ChunkExtensionsTooLong, Ext { size })?,
                b'\r' => SizeLf { size },
                b'\n' => return Err(BareLf),
                _ => return Err(ChunkSize),
            },
            Ext { size } => match b {
                b'\r' => SizeLf { size },
                b'\n' => return Err(BareLf),
                _ if (b < 0x20 && b != b'\t') || b == 0x7f => return Err(ChunkSize),
                _ => self.spend(ext, ChunkExtensionsTooLong, Ext { size })?,
            },
            SizeLf { size } => match b {
                b'\n' if size == 0 => {
                    self.budget = 0;
                    TrailerStart
                }
                b'\n' => Data(size),
                _ => return Err(BareCr),
            },
            DataCr => match b {
                b'\r' => DataLf,
                _ => return Err(ChunkData),
            },
            DataLf => match b {
                b'\n' => Size { size: 0, digits: 0 },
                _ => return Err(ChunkData),
            },
            TrailerStart => match b {
                b'\r' => EndLf,
                b'\n' => return Err(BareLf),
                b' ' | b'\t' => return Err(ObsFold),
                _ if is_token(b) => self.spend(MAX_TRAILERS, TrailersTooLarge, TrailerName)?,
                _ => return Err(TrailerInvalid),
            },
            TrailerName => match b {
                b':' => self.spend(MAX_TRAILERS, TrailersTooLarge, TrailerValue)?,
                b'\n' => return Err(BareLf),
                _ if is_token(b) => self.spend(MAX_TRAILERS, TrailersTooLarge, TrailerName)?,
                _ => return Err(TrailerInvalid),
            },
            TrailerValue => match b {
                b'\r' => TrailerLf,
                b'\n' => return Err(BareLf),
                b'\t' | b' '..=0x7e | 0x80..=0xff => {
                    self.spend(MAX_TRAILERS, TrailersTooLarge, TrailerValue)?
                }
                _ => return Err(TrailerInvalid),
            },
            TrailerLf => match b {
                b'\n' => {
                    self.trailers += 1;
                    if self.trailers > 100 {
                        return Err(TrailerInvalid);
                    }
                    TrailerStart
                }
                _ => return Err(BareCr),
            },
            EndLf => match b {
                b'\n' => Done,
                _ => return Err(BareCr),
            },
            Data(_) | Done => self.state,
        };
        Ok(())
    }

    /// Counts one more extension or trailer byte against `limit`, then moves to `next`.
    fn spend(&mut self, limit: usize, over: Violation, next: State) -> Result<State, Violation> {
        self.budget += 1;
        if self.budget > limit {
            return Err(over);
        }
        Ok(next)
    }
}

/// A byte of a field name (RFC 9110 §5.6.2 `tchar`).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Result<(Vec<u8>, usize), Violation> {
        let mut d = Decoder::default();
        let mut body = Vec::new();
        let r = d.decode(input, |b| body.extend_from_slice(b))?;
        assert!(r.done, "not done");
        Ok((body, r.used))
    }

    #[test]
    fn decodes_at_every_split_the_same() {
        let input =
            b"5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        let (body, used) = all(input).unwrap();
        assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz");
        assert_eq!(used, input.len() - 4);
        for split in 0..input.len() {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            let a = d
                .decode(&input[..split], |b| got.extend_from_slice(b))
                .unwrap();
            assert_eq!(a.used, split.min(used));
            let b = d
                .decode(&input[split..], |b| got.extend_from_slice(b))
                .unwrap();
            if split <= used {
                assert!(b.done);
                assert_eq!(split + b.used, used);
            }
            assert_eq!(got, body);
        }
    }

    #[test]
    fn refuses_bad_sizes_data_ends_and_trailers() {
        for (bad, v) in [
            (&b"5\nhello\r\n0\r\n\r\n"[..], Violation::BareLf),
            (b"x\r\n", Violation::ChunkSize),
            (b"5\r\nhelloX\r\n", Violation::ChunkData),
            (b"11111111111111111\r\n", Violation::ChunkSize),
            (b"0\r\n a: b\r\n\r\n", Violation::ObsFold),
            (b"0\r\n\rx", Violation::BareCr),
            (b"0\r\n\x14: 1\r\n\r\n", Violation::TrailerInvalid),
            (b"0\r\nx : 1\r\n\r\n", Violation::TrailerInvalid),
            (b"0\r\nx: \x01\r\n\r\n", Violation::TrailerInvalid),
        ] {
            assert_eq!(all(bad).unwrap_err(), v, "{bad:?}");
        }
    }
}
