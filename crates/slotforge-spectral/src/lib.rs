//! Spectral slot initialization, per scene, on the CPU (nalgebra): tokens -> affinity
//! ([`affinity`]) -> the smallest nontrivial eigenpairs of the normalized Laplacian
//! ([`linalg`]) -> segment count from the eigengap and k-means on the embedding
//! ([`kmeans`]) -> one group per slot ([`groups`]) -> slot vectors ([`init`]), cached per
//! scene ([`cache`]). Why each step is as it is, and what it costs, is in the repository's
//! `docs/spectral.md`.
//!
//! ```
//! use slotforge_spectral::{segment, SpectralConfig};
//! // a 4x4 grid of 2-dim tokens: left half one feature, right half another
//! let tokens: Vec<f32> = (0..16).flat_map(|i| if i % 4 < 2 { [1.0, 0.0] } else { [0.0, 1.0] }).collect();
//! let seg = segment(&tokens, 16, 2, (4, 4), 2, &SpectralConfig::default());
//! assert_eq!(seg.num_segments, 2);
//! assert_ne!(seg.labels[0], seg.labels[3]);
//! ```

pub mod affinity;
pub mod cache;
pub mod groups;
pub mod init;
pub mod kmeans;
pub mod linalg;

pub use affinity::normalized_affinity;
pub use cache::SpectralCache;
pub use groups::{cluster_spectrum, eigengap_count, segment, segment_batch, MIN_DETACHED_PART};
pub use init::{slot_init, slot_init_batch, slot_similarity, slot_similarity_batch};
pub use linalg::{fix_signs, smallest_nontrivial};


/// Added to every off-diagonal affinity so that no node has zero degree.
pub const AFFINITY_FLOOR: f64 = 1e-6;
/// Two slot directions with cosine above this count as duplicates.
pub const DUPLICATE_COS: f64 = 0.99;

pub(crate) const FALLBACK_SEED: u64 = 0x5107_F0E6_E5EE_D001;
pub(crate) const LANCZOS_SALT: u64 = 0x1A4C_2057_0000_0001;
pub(crate) const SPLIT_SALT: u64 = 0x5B11_7000_0000_0001;
pub(crate) const KMEANS_RESTARTS: usize = 4;
pub(crate) const KMEANS_MAX_ITERS: usize = 100;

/// Eigensolver for the few smallest nontrivial eigenpairs of the normalized Laplacian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Solver {
    /// Full symmetric eigendecomposition (nalgebra `SymmetricEigen`), `O(N^3)`.
    Full,
    /// Lanczos with full reorthogonalization on `D^-1/2 A D^-1/2` restricted to the complement
    /// of the trivial eigenvector (the same Krylov spaces as the shifted operator `2I - L`),
    /// extended until the wanted Ritz pairs have residual below 1e-9.
    Lanczos,
}

/// Settings of the spectral segmentation.
#[derive(Clone, Debug, PartialEq)]
pub struct SpectralConfig {
    /// Upper bound on the number of segments; 0 means "the slot count". The eigengap choice is
    /// also bounded by the slot count and by N - 1.
    pub max_segments: usize,
    /// Weight of the multiplicative spatial term (0 = off): `A *= 1 + w exp(-r^2 / 2 sigma^2)`.
    pub spatial_weight: f32,
    /// Width of the spatial Gaussian, in grid cells.
    pub spatial_sigma: f32,
    /// Exponent of the positive cosine, `A_ij = max(cos_ij, 0)^power` (default 4; 1 is the plain
    /// positive part). For `cos` near 1, `cos^p ~ exp(-p (1 - cos)) = exp(-p |x_i - x_j|^2 / 2)`,
    /// a Gaussian kernel on the chord distance with width `1 / sqrt(p)`: the power is a bandwidth.
    /// See the module docs for why the default is not 1.
    pub affinity_power: f32,
    /// Subtract the scene's mean token before L2-normalizing (default off). Removes a component
    /// shared by all tokens (strong in some ViT features); on scenes dominated by one large
    /// background region it makes that region noisy, so it is not the default.
    pub center_tokens: bool,
    /// Seed of k-means++, the Lanczos start vector and the group splits.
    pub seed: u64,
    /// Eigensolver.
    pub solver: Solver,
    /// Segment a coarser grid (default 1: off): each `pool x pool` block of tokens is
    /// represented by its medoid, that grid is segmented, and each token takes its block's
    /// segment and group; outlines between segments are then redrawn per token. The affinity
    /// is dense, so the cost grows with N^2 (64x64 images: ~0.6 s a scene at N = 4096).
    pub pool: usize,
}

impl Default for SpectralConfig {
    fn default() -> Self {
        SpectralConfig {
            max_segments: 0,
            spatial_weight: 0.0,
            spatial_sigma: 2.0,
            affinity_power: 4.0,
            center_tokens: false,
            seed: 0,
            solver: Solver::Lanczos,
            pool: 1,
        }
    }
}

/// The spectral segmentation of one scene.
#[derive(Clone, Debug, PartialEq)]
pub struct Segmentation {
    /// Token grid `(h, w)`; token `i` sits at row `i / w`, column `i % w`.
    pub grid: (usize, usize),
    /// Segment of each token, `0..num_segments`, numbered by first appearance in token order.
    pub labels: Vec<u32>,
    /// Number of segments chosen by the eigengap (>= 1).
    pub num_segments: usize,
    /// Smallest eigenvalues of the normalized Laplacian, ascending: `[0]` is the trivial 0
    /// (known in closed form, deflated), then `l_1 ..= l_kmax`.
    pub eigenvalues: Vec<f64>,
    /// Slot group of each token: a refinement of `labels` into `num_groups` non-empty groups;
    /// group `s < num_segments` is (what is left of) segment `s`.
    pub groups: Vec<u32>,
    /// Number of groups, `min(num_slots, N)` (or `num_segments` if that is larger).
    pub num_groups: usize,
    /// The segment each group belongs to (`group_segment[s] = s` for `s < num_segments`).
    pub group_segment: Vec<u32>,
    /// The group each group was split from, followed back to a segment or a detached part
    /// (`group_family[g] = g` for those): groups of one family are pieces of one region cut
    /// only to give every slot a group (usually the background).
    pub group_family: Vec<u32>,
}

impl Segmentation {
    /// Number of tokens.
    pub fn n(&self) -> usize {
        self.labels.len()
    }
}

impl AsRef<Segmentation> for Segmentation {
    fn as_ref(&self) -> &Segmentation {
        self
    }
}

/// `S = D^-1/2 A D^-1/2` of one scene and its trivial eigenvector.
#[derive(Clone, Debug)]
pub struct NormalizedAffinity {
    pub n: usize,
    /// Row-major `n x n`, exactly symmetric, zero diagonal.
    pub s: Vec<f64>,
    /// `u0 = D^1/2 1 / |D^1/2 1|`, the eigenvector of `L` for eigenvalue 0 (`S u0 = u0`).
    pub trivial: Vec<f64>,
}

/// The smallest nontrivial eigenpairs of `L`.
#[derive(Clone, Debug)]
pub struct Spectrum {
    pub n: usize,
    /// `l_1 <= ... <= l_m`.
    pub eigenvalues: Vec<f64>,
    /// Column-major `n x m`: eigenvector `i` is `eigenvectors[i * n..(i + 1) * n]`; orthonormal,
    /// orthogonal to the trivial eigenvector, signs fixed by [`fix_signs`].
    pub eigenvectors: Vec<f64>,
}

impl Spectrum {
    pub fn vector(&self, i: usize) -> &[f64] {
        &self.eigenvectors[i * self.n..(i + 1) * self.n]
    }
}

