//! Property tests: the store's file readers (and the `.npy` importer) return an error, never
//! panic, on arbitrary bytes — random files, arbitrary payloads behind a valid checksum, and
//! real files with random damage.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::{class_samples, randomize};
use proptest::prelude::*;
use trak::Trak;
use trak::models::Mlp;
use trak::output::Margin;
use trak::store::{self, FeaturizeOptions, MergeOptions, Run, ScoreOptions};

/// Every file of a small scored run, read once: (name, bytes).
fn real_files() -> &'static Vec<(String, Vec<u8>)> {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let train = class_samples(300, 8, 3, 1);
        let targets = class_samples(4, 8, 3, 2);
        let mut m = Mlp::new(&[8, 5, 3], Margin, 0).unwrap();
        randomize(&mut m, 0.5, 3);
        let trak = Trak::builder().proj_dim(16).build().unwrap();
        let run = Run::create(dir.path(), &trak, 300, 128).unwrap();
        run.featurize(0, &m, &train, FeaturizeOptions::default())
            .unwrap();
        run.merge(MergeOptions::default()).unwrap();
        run.score("t", &[(0, &m)], &targets, ScoreOptions::default())
            .unwrap();
        run.files()
            .unwrap()
            .into_iter()
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(store::inspect(Path::new("fuzz"), &bytes).is_err());
    }

    #[test]
    fn arbitrary_payloads_behind_a_valid_checksum_never_panic(
        kind in 0u32..13,
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let bytes = store::seal_for_tests(kind, &payload);
        // Decoding may succeed only when the payload happens to be well formed.
        let _ = store::inspect(Path::new("fuzz"), &bytes);
    }

    #[test]
    fn damaged_real_files_are_rejected(
        file in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<bool>(),
    ) {
        let files = real_files();
        let (name, orig) = &files[file.index(files.len())];
        prop_assert!(store::inspect(Path::new(name), orig).is_ok());
        let mut bad = orig.clone();
        let i = at.index(bad.len());
        if cut {
            bad.truncate(i);
        } else {
            bad[i] ^= xor;
        }
        let err = store::inspect(Path::new(name), &bad).unwrap_err();
        prop_assert!(matches!(err, trak::Error::Checksum { .. }), "{}", err);
    }

    #[test]
    fn real_payloads_with_damage_behind_a_valid_checksum_never_panic(
        file in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        // Re-seal a damaged payload so that the decoders themselves see it.
        let files = real_files();
        let (_, orig) = &files[file.index(files.len())];
        let kind = u32::from_le_bytes(orig[12..16].try_into().unwrap());
        let mut payload = orig[24..orig.len() - 8].to_vec();
        let i = at.index(payload.len());
        payload[i] = byte;
        let _ = store::inspect(Path::new("fuzz"), &store::seal_for_tests(kind, &payload));
        payload.truncate(i);
        let _ = store::inspect(Path::new("fuzz"), &store::seal_for_tests(kind, &payload));
    }

    #[test]
    fn npy_reader_never_panics(
        tail in proptest::collection::vec(any::<u8>(), 0..512),
        header in prop::sample::select(vec![
            &b""[..],
            &b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }"[..],
            &b"\x93NUMPY\x02\x00"[..],
            &b"\x93NUMPY\x01\x00\xff\xff"[..],
            &b"\x93NUMPY\x01\x00F\x00{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 100000), }"[..],
            &b"\x93NUMPY\x01\x00<\x00{'descr': '<f8', 'fortran_order': True, 'shape': (99999999999,), }"[..],
        ]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        let mut bytes = header.to_vec();
        bytes.extend_from_slice(&tail);
        std::fs::write(&p, &bytes).unwrap();
        let _ = store::npy::read_f32_2d(&p);
        let _ = store::npy::read_f32_1d(&p);
    }
}
