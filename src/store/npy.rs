//! `.npy` import and export (NumPy's array format), through `ndarray-npy`.
//!
//! Exports stream: the header is written by [`ndarray_npy::write_zeroed_npy`], then the data
//! block by block, so exporting an n × k matrix larger than memory needs one block of memory.
//! Files are written to a temporary name and renamed, so a crash leaves no half-written file.
//! Imports read the whole array into memory (`numpy.save` output of any float32 array with
//! the right number of dimensions, either byte order, C or Fortran layout).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use ndarray::{Array1, Array2};
use ndarray_npy::{ReadNpyError, ReadNpyExt};

use super::format::corrupt;
use super::fsio::{io_err, sync_dir, temp_path};
use crate::error::{Error, Result};

fn npy_err(path: &Path, e: ReadNpyError) -> Error {
    match e {
        ReadNpyError::Io(source) => io_err(path, source),
        other => corrupt(
            path,
            format!("not a float32 .npy array of the expected rank: {other}"),
        ),
    }
}

/// Opens a `.npy` file after checking that the data its header declares fits in the file:
/// the reader allocates the declared array before reading, so a damaged header declaring a
/// huge shape must be refused first rather than exhaust memory.
fn open_checked(path: &Path) -> Result<std::io::BufReader<File>> {
    let mut f = File::open(path).map_err(|e| io_err(path, e))?;
    let file_len = f.metadata().map_err(|e| io_err(path, e))?.len() as u128;
    let mut pre = [0u8; 12];
    let got = f.read(&mut pre).map_err(|e| io_err(path, e))?;
    if got < 10 || &pre[..6] != b"\x93NUMPY" {
        return Err(corrupt(path, "not a .npy file (bad magic)"));
    }
    let (hlen, start) = match pre[6] {
        1 => (u16::from_le_bytes([pre[8], pre[9]]) as u64, 10u64),
        2 | 3 if got == 12 => (
            u32::from_le_bytes([pre[8], pre[9], pre[10], pre[11]]) as u64,
            12,
        ),
        v => return Err(corrupt(path, format!("unsupported .npy version {v}"))),
    };
    if (start + hlen) as u128 > file_len {
        return Err(corrupt(path, "the .npy header is longer than the file"));
    }
    let mut header = vec![0u8; hlen as usize];
    f.seek(SeekFrom::Start(start))
        .map_err(|e| io_err(path, e))?;
    f.read_exact(&mut header).map_err(|e| io_err(path, e))?;
    let text = String::from_utf8_lossy(&header);
    let value: py_literal::Value = text
        .trim()
        .parse()
        .map_err(|e| corrupt(path, format!("unreadable .npy header: {e}")))?;
    let shape = match &value {
        py_literal::Value::Dict(items) => items.iter().find_map(|(k, v)| match (k, v) {
            (py_literal::Value::String(k), py_literal::Value::Tuple(dims)) if k == "shape" => {
                Some(dims)
            }
            _ => None,
        }),
        _ => None,
    }
    .ok_or_else(|| corrupt(path, "the .npy header has no shape tuple"))?;
    let mut elems: u128 = 1;
    for d in shape {
        let d = match d {
            py_literal::Value::Integer(i) => i.to_string().parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| corrupt(path, "the .npy shape holds a non-integer"))?;
        elems = elems.saturating_mul(d as u128);
    }
    let data = file_len - (start + hlen) as u128;
    if elems.saturating_mul(4) > data {
        return Err(corrupt(
            path,
            format!(
                "the header declares {elems} float32 values but the file holds {data} data bytes"
            ),
        ));
    }
    f.seek(SeekFrom::Start(0)).map_err(|e| io_err(path, e))?;
    Ok(std::io::BufReader::new(f))
}

/// Reads a 2-D float32 `.npy` file.
pub fn read_f32_2d(path: &Path) -> Result<Array2<f32>> {
    Array2::<f32>::read_npy(open_checked(path)?).map_err(|e| npy_err(path, e))
}

/// Reads a 1-D float32 `.npy` file.
pub fn read_f32_1d(path: &Path) -> Result<Array1<f32>> {
    Array1::<f32>::read_npy(open_checked(path)?).map_err(|e| npy_err(path, e))
}

/// Writes a float32 `.npy` file of `shape` (row-major, native byte order, which the header
/// names), its data produced by `fill` in order;
/// `fill` must write exactly `shape.iter().product()` values through the callback it gets.
pub(crate) fn write_f32_streaming(
    path: &Path,
    shape: &[usize],
    fill: impl FnOnce(&mut dyn FnMut(&[f32]) -> Result<()>) -> Result<()>,
) -> Result<()> {
    let tmp = temp_path(path);
    let res = (|| {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io_err(&tmp, e))?;
        ndarray_npy::write_zeroed_npy::<f32, _>(&file, ndarray::IxDyn(shape)).map_err(|e| {
            io_err(
                &tmp,
                std::io::Error::other(format!("writing the .npy header: {e}")),
            )
        })?;
        let expected: usize = shape.iter().product();
        let mut written = 0usize;
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut file);
            let mut sink = |vals: &[f32]| -> Result<()> {
                written += vals.len();
                if written > expected {
                    return Err(corrupt(
                        path,
                        format!(
                            "the run holds more than the {expected} values of the export's shape"
                        ),
                    ));
                }
                for v in vals {
                    w.write_all(&v.to_ne_bytes()).map_err(|e| io_err(&tmp, e))?;
                }
                Ok(())
            };
            fill(&mut sink)?;
            w.flush().map_err(|e| io_err(&tmp, e))?;
        }
        if written != expected {
            return Err(corrupt(
                path,
                format!("the run holds {written} values, the export's shape needs {expected}"),
            ));
        }
        file.sync_all().map_err(|e| io_err(&tmp, e))?;
        Ok(())
    })();
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    sync_dir(super::fsio::parent_dir(path))
}
