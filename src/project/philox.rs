//! Philox4x32-10, the counter-based generator of Salmon et al. (SC'11, "Parallel random numbers:
//! as easy as 1, 2, 3"), as in Random123, cuRAND and JAX.
//!
//! A counter-based generator is a keyed bijection of a 128-bit counter: output block c is
//! computed directly from (key, c), with no state. Any thread can compute any entry of the
//! projection matrix, so the matrix is the same whatever the tiling, thread count or batch size.

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// Philox4x32 with 10 rounds: four 32-bit output words for a counter and a 64-bit key.
#[inline(always)]
pub fn philox4x32_10(ctr: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    philox4x32_10_lanes(ctr.map(|c| [c]), key).map(|[w]| w)
}

/// Philox4x32-10 on `L` counters at once, in structure-of-arrays form (`ctr[word][lane]`),
/// written so that the compiler vectorises across lanes. Lane l gives exactly
/// `philox4x32_10([ctr[0][l], ctr[1][l], ctr[2][l], ctr[3][l]], key)`.
#[inline(always)]
pub fn philox4x32_10_lanes<const L: usize>(ctr: [[u32; L]; 4], key: [u32; 2]) -> [[u32; L]; 4] {
    let [mut c0, mut c1, mut c2, mut c3] = ctr;
    let [mut k0, mut k1] = key;
    for round in 0..10 {
        if round > 0 {
            k0 = k0.wrapping_add(W0);
            k1 = k1.wrapping_add(W1);
        }
        for l in 0..L {
            let p0 = (M0 as u64) * (c0[l] as u64);
            let p1 = (M1 as u64) * (c2[l] as u64);
            let n0 = ((p1 >> 32) as u32) ^ c1[l] ^ k0;
            let n2 = ((p0 >> 32) as u32) ^ c3[l] ^ k1;
            c1[l] = p1 as u32;
            c3[l] = p0 as u32;
            c0[l] = n0;
            c2[l] = n2;
        }
    }
    [c0, c1, c2, c3]
}

/// SplitMix64's output function (Steele, Lea & Flood 2014): a strong 64-bit mixer, used to
/// derive Philox keys from (seed, checkpoint).
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_match_the_scalar_generator() {
        let key = [0xa409_3822, 0x299f_31d0];
        let ctr: [[u32; 8]; 4] = std::array::from_fn(|w| {
            std::array::from_fn(|l| (w as u32).wrapping_mul(0x9E37_79B9) ^ (l as u32 * 77 + 5))
        });
        let out = philox4x32_10_lanes(ctr, key);
        for l in 0..8 {
            let want = philox4x32_10([ctr[0][l], ctr[1][l], ctr[2][l], ctr[3][l]], key);
            assert_eq!([out[0][l], out[1][l], out[2][l], out[3][l]], want);
        }
    }

    /// Known-answer vectors from Random123's `tests/kat_vectors`.
    #[test]
    fn random123_known_answers() {
        assert_eq!(
            philox4x32_10([0; 4], [0; 2]),
            [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]
        );
        assert_eq!(
            philox4x32_10([u32::MAX; 4], [u32::MAX; 2]),
            [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]
        );
        assert_eq!(
            philox4x32_10(
                [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
                [0xa4093822, 0x299f31d0]
            ),
            [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]
        );
    }
}
