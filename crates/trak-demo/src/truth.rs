//! The counterfactual ground truth of the LDS protocol: models of a family trained on random
//! α-subsets of the training set, and their margins on the targets. Training them is the
//! expensive part of the protocol, so the margins are cached on disk under a key that names
//! every setting they depend on.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use trak::Result;
use trak::data::Sample;
use trak::eval::subset_masks;

use crate::family::Family;
use crate::protocol::BenchConfig;

/// Ground truth of one family: subset masks (J × n) and subset-model margins (J × m).
pub struct GroundTruth {
    /// Subset membership, J × n.
    pub masks: Array2<bool>,
    /// Margin of subset model j on target t, J × m.
    pub margins: Array2<f32>,
}

#[derive(Serialize, Deserialize)]
struct MarginCache {
    key: String,
    rows: usize,
    cols: usize,
    margins: Vec<f32>,
}

/// Trains (or loads from the cache) the subset models of `family` and returns their margins.
pub fn ground_truth(
    cfg: &BenchConfig,
    family: Family,
    train: &[Sample],
    targets: &[Sample],
) -> Result<GroundTruth> {
    let masks = subset_masks(train.len(), cfg.alpha, cfg.subsets, cfg.seed ^ 0x5u64)?;
    let key = format!(
        "v1 family={} sizes={:?} sgd={:?} n_train={} n_targets={} J={} alpha={} seed={} data=mnist_5k",
        family.name(),
        family.sizes(),
        family.sgd(0),
        train.len(),
        targets.len(),
        cfg.subsets,
        cfg.alpha,
        cfg.seed
    );
    let path = cfg.cache_dir.as_ref().map(|d| cache_path(d, family, &key));
    if let Some(margins) = path.as_deref().and_then(|p| load(cfg, family, p, &key)) {
        return Ok(GroundTruth { masks, margins });
    }
    cfg.log(format!(
        "{}: training {} subset models",
        family.name(),
        cfg.subsets
    ));
    let margins = subset_margins(family, &masks, train, targets)?;
    if let Some(p) = &path {
        save(p, &key, &margins)?;
    }
    Ok(GroundTruth { masks, margins })
}

/// Margins (J × m) of models of `family` trained on each subset j (seed 1,000,000 + j).
fn subset_margins(
    family: Family,
    masks: &Array2<bool>,
    train: &[Sample],
    targets: &[Sample],
) -> Result<Array2<f32>> {
    let rows: Vec<Vec<f32>> = (0..masks.nrows())
        .into_par_iter()
        .map(|j| {
            let subset: Vec<Sample> = masks
                .row(j)
                .iter()
                .zip(train)
                .filter(|(b, _)| **b)
                .map(|(_, s)| s.clone())
                .collect();
            let model = family.train(&subset, 1_000_000 + j as u64)?;
            Ok(model.outputs(targets)?.iter().map(|v| v.f).collect())
        })
        .collect::<Result<_>>()?;
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    Ok(Array2::from_shape_vec((masks.nrows(), targets.len()), flat).expect("J × m margins"))
}

/// `<dir>/margins-<family>-<FNV-1a of key>.bin`.
fn cache_path(dir: &Path, family: Family, key: &str) -> PathBuf {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    dir.join(format!("margins-{}-{h:016x}.bin", family.name()))
}

/// The cached margins at `path` if they exist and were made under `key`.
fn load(cfg: &BenchConfig, family: Family, path: &Path, key: &str) -> Option<Array2<f32>> {
    let bytes = std::fs::read(path).ok()?;
    let decoded =
        bincode::serde::decode_from_slice::<MarginCache, _>(&bytes, bincode::config::standard());
    match decoded {
        Ok((c, _)) if c.key == key && c.margins.len() == c.rows * c.cols => {
            let what = format!("{}: subset margins from {}", family.name(), path.display());
            cfg.log(what);
            Array2::from_shape_vec((c.rows, c.cols), c.margins).ok()
        }
        _ => {
            let what = format!("{}: ignoring stale cache {}", family.name(), path.display());
            cfg.log(what);
            None
        }
    }
}

/// Writes the cache atomically (the store's own atomic write).
fn save(path: &Path, key: &str, margins: &Array2<f32>) -> Result<()> {
    let cache = MarginCache {
        key: key.to_string(),
        rows: margins.nrows(),
        cols: margins.ncols(),
        margins: margins.iter().copied().collect(),
    };
    let bytes = bincode::serde::encode_to_vec(&cache, bincode::config::standard())
        .expect("encoding plain data into a Vec cannot fail");
    let dir = path.parent().expect("cache file has a directory");
    std::fs::create_dir_all(dir).map_err(|source| trak::Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    trak::store::write_atomic(path, &bytes)
}
