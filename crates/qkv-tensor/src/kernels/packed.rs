//! qkv's own GEMM for AVX2+FMA CPUs, the classic cache-blocked design
//! (Goto/BLIS): `C (+)= s·A·B` computed one `KC`-deep slice of `K` at a time.
//!
//! * `B`'s slice is copied ("packed") into panels 16 columns wide, each
//!   contiguous, so the micro-kernel reads it as one stream; the packed slice
//!   (`KC × N` floats) is shared by all threads.
//! * Each task packs a block of `MC` rows of `A` into panels 6 rows tall, and
//!   sweeps its columns of `C` tile by tile.
//! * The micro-kernel holds a 6×16 tile of `C` in twelve 8-lane registers and,
//!   for each step along `K`, broadcasts 6 values of `A`, loads 16 of `B` and
//!   does 12 fused multiply-adds.
//!
//! Strides are honoured while packing, so `A·Bᵀ` and `Aᵀ·B` need no copies
//! beyond the packing itself. A weight that many products read unchanged
//! (inference) can be packed once ahead instead ([`PackedB`],
//! [`gemm_prepacked`]): the same sweeps, without packing `B` again. [`super::gemm::matmul_naive`] is its twin in tests.

use rayon::prelude::*;

use super::SharedMut;
use super::gemm::{Mat, RawMatMut};

const MR: usize = 6;
const NR: usize = 16;
/// Depth of a slice of K: a 16-wide panel of B (16 KB) stays in L1.
const KC: usize = 256;
/// A K up to this deep is done in one slice instead: its B panel (24 KB)
/// still fits in L1 beside an A panel, and each tile of C is written once,
/// not twice. Products with MiniLM's K = 384 ran 2–5 % faster so (alternating
/// per call in one process); slices this deep in general cost 2048³ ~3 %.
const KC_ONE_SLICE: usize = 384;
/// Most rows of A per task (the packed block, 48 KB, stays in L2). Few rows
/// also keep the tiles of C that one column panel visits on few pages, so
/// their addresses stay in the L1 TLB: 48 rows measured ~5 % faster than 96
/// on one thread (N up to 3072).
const MC: usize = 48;

/// Up to this many rows, and at least four times as many columns, A is one
/// block and the threads split the columns instead: each panel of B then
/// comes from memory once, not once per block of A. That is the shape of
/// decoding (a few rows per sentence against a weight read whole), where the
/// loads of B were the stall: 32 × 256 × 8000 went from 88 to 124 GFLOP/s on
/// two Zen 2 cores. With fewer columns, every task packing all of A costs
/// more than B's second trip (128 × 1024 × 256: 146 → 102).
const MC_ONE_BLOCK: usize = 144;

/// Most columns of B packed at once: a slice of `KC × NC` (4 MiB) stays in the
/// L3 cache while every block of A sweeps it, and a wide product (an LM head
/// over a 50k vocabulary) does not allocate a packed copy of all of B.
const NC: usize = 4096;

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::simd::instruction_set() == "avx2+fma"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C (+)= s·A·B`.
///
/// # Safety
/// As [`super::gemm::matmul_raw`]; the caller checked [`available`], the
/// sizes, and that `a` and `b` lie inside their slices.
pub unsafe fn gemm(c: RawMatMut, a: Mat<'_>, b: Mat<'_>, s: f32, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    debug_assert!(m > 0 && k > 0 && n > 0, "matmul_raw handles empty products");
    if n > NC {
        // one block of at most NC columns of B and C at a time
        for j0 in (0..n).step_by(NC) {
            let cols = NC.min(n - j0);
            let bj = Mat { cols, offset: b.offset + j0 * b.cs, ..b };
            // SAFETY: columns j0..j0+cols of C lie inside the caller's C.
            let cj = RawMatMut { ptr: unsafe { c.ptr.add(j0 * c.cs) }, cols, ..c };
            // SAFETY: as for the whole product.
            unsafe { gemm(cj, a, bj, s, accumulate, parallel) };
        }
        return;
    }
    let panels = n.div_ceil(NR);
    let slice = slice_depth(k);
    // packing writes every element it uses, so a reused buffer needs no clearing
    let mut packed_b_buf = crate::pool::take(slice * panels * NR + 16);
    let packed_b = aligned(&mut packed_b_buf);
    for k0 in (0..k).step_by(slice) {
        let kc = slice.min(k - k0);
        let used = &mut packed_b[..panels * kc * NR];
        pack_b_slice(used, b, k0, kc, parallel);
        // the first slice writes C (adding to it only when asked), later ones add
        // SAFETY: as for the whole product.
        unsafe { sweep(c, a, used, k0, kc, s, accumulate || k0 > 0, parallel) };
    }
    crate::pool::give(packed_b_buf);
}

/// Depth of the slices of K (the same for packing ahead in [`PackedB`]): as
/// even as possible (768 = 3 × 256, 1000 = 4 × 250), or all of a K up to
/// [`KC_ONE_SLICE`].
fn slice_depth(k: usize) -> usize {
    if k <= KC_ONE_SLICE { k } else { k.div_ceil(k.div_ceil(KC)) }
}

/// Packs `B[k0..k0+kc, :]` into `dst`: panel j holds kc rows of 16 columns.
fn pack_b_slice(dst: &mut [f32], b: Mat<'_>, k0: usize, kc: usize, parallel: bool) {
    let panels = dst.len() / (kc * NR);
    // rows of B contiguous: a few groups of panels, each filled row by row
    // (see `pack_b_rows`); otherwise panel by panel
    let (per, pack): (usize, PackB) = if b.cs == 1 {
        let groups = if parallel { 2 * rayon::current_num_threads() } else { 1 };
        (panels.div_ceil(groups), pack_b_rows)
    } else {
        (1, pack_b)
    };
    let pack_chunk = |(g, dst): (usize, &mut [f32])| pack(dst, b, k0, kc, g * per * NR);
    if parallel {
        dst.par_chunks_mut(per * kc * NR).enumerate().for_each(pack_chunk);
    } else {
        dst.chunks_mut(per * kc * NR).enumerate().for_each(pack_chunk);
    }
}

/// Whether A is one block and the threads split the columns (see [`MC_ONE_BLOCK`]).
fn one_block(m: usize, n: usize) -> bool {
    m <= MC_ONE_BLOCK && n >= 4 * m
}

/// `C (+)= s · A[:, k0..k0+kc] · B_slice` for one packed slice of B (all of
/// C's columns, `packed_b` holding their panels): tasks are blocks of at most
/// MC rows of A, as many per thread, × groups of panels (more groups when M is
/// small). Each task packs its block of A and sweeps its panels tile by tile.
///
/// # Safety
/// As [`gemm`]; `packed_b` holds C's columns' panels, `kc` deep.
#[allow(clippy::too_many_arguments)]
unsafe fn sweep(c: RawMatMut, a: Mat<'_>, packed_b: &[f32], k0: usize, kc: usize, s: f32, add: bool, parallel: bool) {
    let (m, n) = (a.rows, c.cols);
    let panels = n.div_ceil(NR);
    debug_assert!(packed_b.len() >= panels * kc * NR);
    let cp = SharedMut(c.ptr);
    let threads = if parallel { rayon::current_num_threads() } else { 1 };
    // blocks of whole 6-row panels, a multiple of the thread count, their
    // sizes differing by at most one panel so no thread waits on another
    let m_panels = m.div_ceil(MR);
    let m_blocks = if one_block(m, n) { 1 } else { (threads * m.div_ceil(threads * MC)).min(m_panels) };
    let groups = if m_blocks >= 2 * threads { 1 } else { (2 * threads).div_ceil(m_blocks).min(panels) };
    let per_group = panels.div_ceil(groups);
    let task = |t: usize| {
        let (mb, g) = (t / groups, t % groups);
        let (ip0, ip1) = (mb * m_panels / m_blocks, (mb + 1) * m_panels / m_blocks);
        let (i0, mc) = (ip0 * MR, (ip1 * MR).min(m) - ip0 * MR);
        let (p0, p1) = (g * per_group, ((g + 1) * per_group).min(panels));
        // SAFETY: this task alone writes rows i0..i0+mc of panels p0..p1 of C.
        unsafe { sweep_block(RawMatMut { ptr: cp.ptr(), ..c }, a, packed_b, (k0, kc), (i0, mc), (p0, p1), s, add) };
    };
    let tasks = m_blocks * groups;
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// One task of a sweep: packs `A[i0..i0+mc, k0..k0+kc]` into 6-row panels and
/// multiplies it into the column panels `p0..p1` of C, tile by tile.
///
/// # Safety
/// As [`gemm`]; nothing else touches those rows of those panels of C during
/// the call.
#[allow(clippy::too_many_arguments)]
unsafe fn sweep_block(
    c: RawMatMut,
    a: Mat<'_>,
    packed_b: &[f32],
    (k0, kc): (usize, usize),
    (i0, mc): (usize, usize),
    (p0, p1): (usize, usize),
    s: f32,
    add: bool,
) {
    if p0 >= p1 || mc == 0 {
        return;
    }
    let n = c.cols;
    // kc steps of 6 values per panel
    let a_panels = mc.div_ceil(MR);
    let mut packed_a_buf = crate::pool::take(a_panels * kc * MR + 16);
    let packed_a = &mut aligned(&mut packed_a_buf)[..a_panels * kc * MR];
    for (ip, dst) in packed_a.chunks_mut(kc * MR).enumerate() {
        pack_a(dst, a, i0 + ip * MR, MR.min(mc - ip * MR), k0, kc);
    }
    for jp in p0..p1 {
        let bpanel = &packed_b[jp * kc * NR..(jp + 1) * kc * NR];
        let (j, nr) = (jp * NR, NR.min(n - jp * NR));
        for ip in 0..a_panels {
            let apanel = &packed_a[ip * kc * MR..(ip + 1) * kc * MR];
            let (i, mr) = (i0 + ip * MR, MR.min(mc - ip * MR));
            // SAFETY: the tile (i..i+mr, j..j+nr) lies in C and belongs to this task alone.
            unsafe {
                let tile = RawMatMut { ptr: c.ptr.add(i * c.rs + j * c.cs), rows: mr, cols: nr, ..c };
                avx2::tile(tile, apanel, bpanel, kc, s, add);
            }
        }
    }
    crate::pool::give(packed_a_buf);
}

/// [`gemm_prepacked`] for a one-block product ([`one_block`]) of several
/// slices of K: one parallel region in all, each task walking every slice
/// for its own group of columns, where [`sweep`] would open one region per
/// slice. A recurrent network's backward step (32 × 2048 × 512, eight
/// slices) spent a sixth of its time starting and joining those regions.
///
/// # Safety
/// As [`gemm_prepacked`], for columns `j0 .. j0 + c.cols` of B's block at `at`.
unsafe fn sweep_slices(c: RawMatMut, a: Mat<'_>, b: &PackedB, at: usize, s: f32, accumulate: bool) {
    let (m, n, k) = (a.rows, c.cols, b.k);
    let panels = n.div_ceil(NR);
    let groups = (2 * rayon::current_num_threads()).min(panels);
    let per_group = panels.div_ceil(groups);
    let slice = slice_depth(k.max(1));
    let cp = SharedMut(c.ptr);
    (0..groups).into_par_iter().for_each(|g| {
        let (p0, p1) = (g * per_group, ((g + 1) * per_group).min(panels));
        let mut from = at;
        for k0 in (0..k).step_by(slice) {
            let kc = slice.min(k - k0);
            let size = panels * kc * NR;
            let c = RawMatMut { ptr: cp.ptr(), ..c };
            // SAFETY: this task alone writes the column panels p0..p1 of C.
            unsafe {
                sweep_block(c, a, &b.data[from..from + size], (k0, kc), (0, m), (p0, p1), s, accumulate || k0 > 0)
            };
            from += size;
        }
    });
}

/// `B` packed once, ahead of the products that read it: the panels [`gemm`]
/// would pack on every call, for a weight that many products read unchanged
/// (inference). Laid out as `gemm` walks them: blocks of at most [`NC`]
/// columns, each holding its slices of K one after another, each slice its
/// panels of 16 columns.
pub struct PackedB {
    k: usize,
    n: usize,
    data: Vec<f32>,
    /// where the 64-byte-aligned panels start in `data`
    start: usize,
}

impl std::fmt::Debug for PackedB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedB[{}, {}]", self.k, self.n)
    }
}

impl PackedB {
    /// Pack all of `b` (`K × N`, any strides).
    pub fn new(b: Mat<'_>) -> PackedB {
        let (k, n) = (b.rows, b.cols);
        assert!(b.fits(), "PackedB: the view reaches past its buffer");
        // every block's panels hold whole multiples of 16 columns
        let len: usize = (0..n).step_by(NC).map(|j0| k * NC.min(n - j0).div_ceil(NR) * NR).sum();
        let mut data = vec![0.0f32; len + 16];
        let start = data.as_ptr().align_offset(64).min(16);
        let slice = slice_depth(k.max(1));
        let mut at = start;
        for j0 in (0..n).step_by(NC) {
            let bj = Mat { cols: NC.min(n - j0), offset: b.offset + j0 * b.cs, ..b };
            for k0 in (0..k).step_by(slice) {
                let kc = slice.min(k - k0);
                let size = bj.cols.div_ceil(NR) * kc * NR;
                pack_b_slice(&mut data[at..at + size], bj, k0, kc, true);
                at += size;
            }
        }
        PackedB { k, n, data, start }
    }

    /// `[K, N]`, the shape of the `B` it holds.
    pub fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    /// Floats held (the panels, padded to whole panels, and the alignment).
    pub fn floats(&self) -> usize {
        self.data.len()
    }
}

/// [`gemm`] with `B` packed ahead ([`PackedB`]): the same products, without
/// packing `B` again.
///
/// # Safety
/// As [`gemm`]; `a.cols` is `b`'s K and `c.cols` its N.
pub unsafe fn gemm_prepacked(c: RawMatMut, a: Mat<'_>, b: &PackedB, s: f32, accumulate: bool, parallel: bool) {
    let (k, n) = (b.k, b.n);
    assert!(a.cols == k && c.cols == n && c.rows == a.rows, "gemm_prepacked: sizes do not chain");
    assert!(a.fits(), "gemm_prepacked: A reaches past its buffer");
    if a.rows == 0 || n == 0 {
        return;
    }
    let slice = slice_depth(k.max(1));
    let mut at = b.start;
    for j0 in (0..n).step_by(NC) {
        let cols = NC.min(n - j0);
        // SAFETY: columns j0..j0+cols of C lie inside the caller's C.
        let cj = RawMatMut { ptr: unsafe { c.ptr.add(j0 * c.cs) }, cols, ..c };
        if parallel && k > slice && one_block(a.rows, cols) {
            // SAFETY: as for the whole product; `at` starts this block's slices.
            unsafe { sweep_slices(cj, a, b, at, s, accumulate) };
            at += cols.div_ceil(NR) * k * NR;
            continue;
        }
        for k0 in (0..k).step_by(slice) {
            let kc = slice.min(k - k0);
            let size = cols.div_ceil(NR) * kc * NR;
            // SAFETY: as for the whole product; the slice holds this block's panels.
            unsafe { sweep(cj, a, &b.data[at..at + size], k0, kc, s, accumulate || k0 > 0, parallel) };
            at += size;
        }
    }
    if k == 0 && !accumulate {
        // empty sums
        for i in 0..c.rows {
            for j in 0..n {
                // SAFETY: in range by the caller's contract.
                unsafe { *c.ptr.add(i * c.rs + j * c.cs) = 0.0 };
            }
        }
    }
}

/// Fills `dst` with packed panels of `B`: `(dst, B, k0, kc, first column)`.
type PackB = fn(&mut [f32], Mat<'_>, usize, usize, usize);

/// The part of `buf` that starts on a 64-byte boundary (a cache line), so no
/// 8-lane load from a packed panel straddles two lines.
fn aligned(buf: &mut [f32]) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64).min(16);
    &mut buf[skip..]
}

/// `dst[p·W + r] = src[r][p]`: `W` contiguous runs written side by side, the
/// order the micro-kernel reads a packed panel in. A transpose: done eight
/// steps at a time through 8×8 register transposes where the CPU has AVX2
/// (one element at a time, it cost ~12 % of the products it feeds at an
/// encoder's shapes), with [`interleave_plain`] as its twin.
fn interleave<const W: usize>(dst: &mut [f32], src: [&[f32]; W]) {
    let steps = dst.len() / W;
    assert!(src.iter().all(|s| s.len() >= steps), "interleave: runs shorter than the panel");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX2 is present; every run holds `steps` values (checked above).
        let done = unsafe { avx2::interleave(dst, src) };
        interleave_plain(&mut dst[done * W..], src.map(|s| &s[done..]));
        return;
    }
    interleave_plain(dst, src);
}

/// [`interleave`] one element at a time.
fn interleave_plain<const W: usize>(dst: &mut [f32], src: [&[f32]; W]) {
    for (p, step) in dst.chunks_exact_mut(W).enumerate() {
        for (d, s) in step.iter_mut().zip(&src) {
            *d = s[p];
        }
    }
}

/// Panel of 16 columns of `B` starting at column `j0`, rows `k0..k0+kc`:
/// `dst[p·16 + col] = B[k0+p, j0+col]`, zeros past the last column. For `B`
/// whose rows are not contiguous (`cs != 1`; those go to [`pack_b_rows`]).
fn pack_b(dst: &mut [f32], b: Mat<'_>, k0: usize, kc: usize, j0: usize) {
    let cols = NR.min(b.cols - j0);
    if cols < NR {
        dst.fill(0.0);
    }
    let dst = &mut dst[..kc * NR];
    if b.rs == 1 && cols == NR {
        // columns are contiguous (B = Wᵀ, a weight stored out × in): read the
        // 16 columns side by side so the panel is written in order
        let col = |c: usize| {
            let at = b.offset + (j0 + c) * b.cs + k0;
            &b.data[at..at + kc]
        };
        interleave::<NR>(dst, std::array::from_fn(col));
    } else {
        for (p, row) in dst.chunks_exact_mut(NR).enumerate() {
            for (c, d) in row[..cols].iter_mut().enumerate() {
                *d = b.data[b.offset + (k0 + p) * b.rs + (j0 + c) * b.cs];
            }
        }
    }
}

/// Consecutive panels of 16 columns of `B` (rows contiguous, `cs == 1`),
/// starting at column `j0`, rows `k0..k0+kc`, filled one row of `B` at a
/// time: each row's stretch across all the panels is read front to back, and
/// its 16-column pieces go one to each panel. Panel by panel (as
/// [`pack_b`] does), every row would be a separate 64-byte read `N` floats
/// from the last, which the prefetchers do not follow: for a prompt of 32
/// tokens, packing GPT-2's `[in, out]` weights so took more time than the
/// products themselves.
fn pack_b_rows(dst: &mut [f32], b: Mat<'_>, k0: usize, kc: usize, j0: usize) {
    let panels = dst.len() / (kc * NR);
    let cols = (panels * NR).min(b.cols - j0);
    if cols < panels * NR {
        // the last panel has columns past the edge of B: zeros
        dst[(panels - 1) * kc * NR..].fill(0.0);
    }
    let whole = cols / NR;
    for p in 0..kc {
        let at = b.offset + (k0 + p) * b.rs + j0;
        let row = &b.data[at..at + cols];
        let (pieces, rest) = row.as_chunks::<NR>();
        for (jp, piece) in pieces.iter().enumerate() {
            // a fixed-size copy: two vector moves, not a call to memmove
            let d: &mut [f32; NR] = (&mut dst[jp * kc * NR + p * NR..][..NR]).try_into().expect("a whole panel row");
            *d = *piece;
        }
        if !rest.is_empty() {
            dst[whole * kc * NR + p * NR..][..rest.len()].copy_from_slice(rest);
        }
    }
}

/// Panel of `rows` (≤ 6) rows of `A` starting at row `i0`, columns
/// `k0..k0+kc`: `dst[p·6 + r] = A[i0+r, k0+p]`, zeros past the last row.
fn pack_a(dst: &mut [f32], a: Mat<'_>, i0: usize, rows: usize, k0: usize, kc: usize) {
    let dst = &mut dst[..kc * MR];
    if a.cs == 1 && rows == MR {
        // rows of A are contiguous (the usual case): read the 6 side by side
        let row = |r: usize| {
            let at = a.offset + (i0 + r) * a.rs + k0;
            &a.data[at..at + kc]
        };
        interleave::<MR>(dst, std::array::from_fn(row));
        return;
    }
    if a.rs == 1 && rows == MR {
        // columns are contiguous (A = Xᵀ in a weight gradient): the 6 values
        // of one step are side by side already
        for (p, step) in dst.as_chunks_mut::<MR>().0.iter_mut().enumerate() {
            let at = a.offset + i0 + (k0 + p) * a.cs;
            *step = a.data[at..at + MR].try_into().expect("a whole panel step");
        }
        return;
    }
    if rows < MR {
        dst.fill(0.0);
    }
    for (p, step) in dst.chunks_exact_mut(MR).enumerate() {
        for (r, d) in step[..rows].iter_mut().enumerate() {
            *d = a.data[a.offset + (i0 + r) * a.rs + (k0 + p) * a.cs];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{MR, NR};
    use crate::kernels::gemm::RawMatMut;

    /// One 6×16 tile: `C[..mr, ..nr] = s·acc (+ C)`, acc = packed A panel ·
    /// packed B panel. A panel with fewer than 6 rows (the last of an M that
    /// 6 does not divide) computes only its rows: 32 rows are 5⅓ panels of
    /// work, not 6 — a decoder's or a recurrent step's products have 32.
    ///
    /// # Safety
    /// AVX2+FMA present; `apanel` holds `kc·6`, `bpanel` `kc·16` floats; the
    /// `mr × nr` tile of `c` is valid and unshared.
    pub(super) unsafe fn tile(c: RawMatMut, apanel: &[f32], bpanel: &[f32], kc: usize, s: f32, add: bool) {
        // SAFETY: forwarded contract; each instance reads rows < R ≤ 6 of the panel.
        unsafe {
            match c.rows {
                1 => tile_rows::<1>(c, apanel, bpanel, kc, s, add),
                2 => tile_rows::<2>(c, apanel, bpanel, kc, s, add),
                3 => tile_rows::<3>(c, apanel, bpanel, kc, s, add),
                4 => tile_rows::<4>(c, apanel, bpanel, kc, s, add),
                5 => tile_rows::<5>(c, apanel, bpanel, kc, s, add),
                _ => tile_rows::<MR>(c, apanel, bpanel, kc, s, add),
            }
        }
    }

    /// [`tile`] for a panel of `R` live rows.
    ///
    /// # Safety
    /// As [`tile`], with `c.rows == R` (or 6 for `R = 6`).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile_rows<const R: usize>(c: RawMatMut, apanel: &[f32], bpanel: &[f32], kc: usize, s: f32, add: bool) {
        debug_assert!(apanel.len() >= kc * MR && bpanel.len() >= kc * NR);
        let (ap, bp) = (apanel.as_ptr(), bpanel.as_ptr());
        // SAFETY (whole body): reads stay inside the panels (p < kc); writes
        // inside the tile, as the caller guarantees.
        unsafe {
            // fetch the tile of C now, so its cache misses overlap the products
            // instead of stalling the stores at the end
            for r in 0..c.rows {
                let row = c.ptr.add(r * c.rs);
                _mm_prefetch::<_MM_HINT_T0>(row as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(row.add((c.cols - 1) * c.cs) as *const i8);
            }
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            for p in 0..kc {
                let b0 = _mm256_loadu_ps(bp.add(p * NR));
                let b1 = _mm256_loadu_ps(bp.add(p * NR + 8));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av = _mm256_broadcast_ss(&*ap.add(p * MR + r));
                    row[0] = _mm256_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm256_fmadd_ps(av, b1, row[1]);
                }
            }
            let sv = _mm256_set1_ps(s);
            if c.cs == 1 && c.cols == NR {
                // a whole row of the tile is contiguous in C: vector loads and stores
                for (r, row) in acc.iter().enumerate().take(c.rows) {
                    let dst = c.ptr.add(r * c.rs);
                    for (h, v) in row.iter().enumerate() {
                        let mut y = _mm256_mul_ps(*v, sv);
                        if add {
                            y = _mm256_add_ps(y, _mm256_loadu_ps(dst.add(8 * h)));
                        }
                        _mm256_storeu_ps(dst.add(8 * h), y);
                    }
                }
            } else {
                let mut buf = [0.0f32; MR * NR];
                for (r, row) in acc.iter().enumerate() {
                    _mm256_storeu_ps(buf.as_mut_ptr().add(r * NR), row[0]);
                    _mm256_storeu_ps(buf.as_mut_ptr().add(r * NR + 8), row[1]);
                }
                for r in 0..c.rows {
                    for j in 0..c.cols {
                        let dst = c.ptr.add(r * c.rs + j * c.cs);
                        let y = s * buf[r * NR + j];
                        *dst = if add { *dst + y } else { y };
                    }
                }
            }
        }
    }

    /// `out[t][r] = rows[r][t]`: the 8×8 transpose of eight 8-lane rows.
    #[target_feature(enable = "avx2,fma")]
    fn transpose8(rows: [__m256; 8]) -> [__m256; 8] {
        let [r0, r1, r2, r3, r4, r5, r6, r7] = rows;
        // pairs of rows interleaved, then quads, then the two 128-bit halves
        let (t0, t1) = (_mm256_unpacklo_ps(r0, r1), _mm256_unpackhi_ps(r0, r1));
        let (t2, t3) = (_mm256_unpacklo_ps(r2, r3), _mm256_unpackhi_ps(r2, r3));
        let (t4, t5) = (_mm256_unpacklo_ps(r4, r5), _mm256_unpackhi_ps(r4, r5));
        let (t6, t7) = (_mm256_unpacklo_ps(r6, r7), _mm256_unpackhi_ps(r6, r7));
        let (u0, u1) = (_mm256_shuffle_ps::<0x44>(t0, t2), _mm256_shuffle_ps::<0xEE>(t0, t2));
        let (u2, u3) = (_mm256_shuffle_ps::<0x44>(t1, t3), _mm256_shuffle_ps::<0xEE>(t1, t3));
        let (u4, u5) = (_mm256_shuffle_ps::<0x44>(t4, t6), _mm256_shuffle_ps::<0xEE>(t4, t6));
        let (u6, u7) = (_mm256_shuffle_ps::<0x44>(t5, t7), _mm256_shuffle_ps::<0xEE>(t5, t7));
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }

    /// [`super::interleave`] for the whole blocks of 8 steps; returns how many
    /// steps it wrote (the rest is left to the plain loop). Sources are taken
    /// 8 at a time (6 for A's panels, the two missing rows read as zeros).
    ///
    /// # Safety
    /// AVX2 present; every run in `src` holds at least `dst.len() / W` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn interleave<const W: usize>(dst: &mut [f32], src: [&[f32]; W]) -> usize {
        let blocks = dst.len() / W / 8;
        let dp = dst.as_mut_ptr();
        for g in (0..W).step_by(8) {
            let width = 8.min(W - g);
            for blk in 0..blocks {
                let p = blk * 8;
                let mut rows = [_mm256_setzero_ps(); 8];
                for (row, s) in rows.iter_mut().zip(&src[g..g + width]) {
                    // SAFETY: p + 8 ≤ steps ≤ s.len().
                    *row = unsafe { _mm256_loadu_ps(s.as_ptr().add(p)) };
                }
                for (t, v) in transpose8(rows).into_iter().enumerate() {
                    // SAFETY: step p + t < blocks·8 ≤ steps, so its W values lie in dst.
                    unsafe {
                        let at = dp.add((p + t) * W + g);
                        if width == 8 {
                            _mm256_storeu_ps(at, v);
                        } else {
                            // 6 of the 8 lanes: 4, then 2
                            _mm_storeu_ps(at, _mm256_castps256_ps128(v));
                            let hi = _mm256_extractf128_ps::<1>(v);
                            _mm_storel_epi64(at.add(4) as *mut __m128i, _mm_castps_si128(hi));
                        }
                    }
                }
            }
        }
        blocks * 8
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    /// # Safety
    /// Never called: `packed::available()` is false off x86-64.
    pub(super) unsafe fn tile(_: crate::kernels::gemm::RawMatMut, _: &[f32], _: &[f32], _: usize, _: f32, _: bool) {
        unreachable!("packed::available() is false off x86-64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;
    use crate::kernels::gemm::{MatMut, matmul_naive};

    #[test]
    fn prepacked_b_with_k_zero_gives_empty_sums() {
        if !available() {
            return;
        }
        let packed = PackedB::new(Mat::rows(&[], 0, 4));
        for (accumulate, want) in [(false, 0.0), (true, 2.0)] {
            let mut got = vec![2.0f32; 3 * 4];
            let c = RawMatMut { ptr: got.as_mut_ptr(), rows: 3, cols: 4, rs: 4, cs: 1 };
            // SAFETY: got holds the 3 × 4 matrix; A is empty.
            unsafe { gemm_prepacked(c, Mat::rows(&[], 3, 0), &packed, 1.0, accumulate, true) };
            assert!(got.iter().all(|&g| g == want), "accumulate={accumulate}: {got:?}");
        }
    }

    #[test]
    fn interleave_matches_its_plain_twin() {
        let mut rng = Rng::new(5);
        // steps with and without a tail after the blocks of 8; runs longer than the panel
        for steps in [0, 1, 7, 8, 9, 16, 45, 192] {
            let runs: Vec<Vec<f32>> = (0..NR).map(|_| (0..steps + 3).map(|_| rng.normal()).collect()).collect();
            let mut want = vec![0.0f32; steps * NR];
            let mut got = vec![f32::NAN; steps * NR];
            interleave_plain::<NR>(&mut want, std::array::from_fn(|r| &runs[r][..]));
            interleave::<NR>(&mut got, std::array::from_fn(|r| &runs[r][..]));
            assert_eq!(got, want, "W=16, {steps} steps");
            let mut want = vec![0.0f32; steps * MR];
            let mut got = vec![f32::NAN; steps * MR];
            interleave_plain::<MR>(&mut want, std::array::from_fn(|r| &runs[r][..]));
            interleave::<MR>(&mut got, std::array::from_fn(|r| &runs[r][..]));
            assert_eq!(got, want, "W=6, {steps} steps");
        }
    }

    /// In pools of 1 to 4 threads: the split of M into blocks and of the
    /// column panels into groups follows the thread count.
    #[test]
    fn matches_naive_on_awkward_shapes_strides_and_slices_packed_now_or_ahead() {
        if !available() {
            return;
        }
        crate::threads::on_pools(&crate::threads::TEST_POOLS, matches_naive_in_this_pool);
    }

    fn matches_naive_in_this_pool() {
        let mut rng = Rng::new(11);
        for &(m, k, n) in &[
            (1, 1, 1),
            (7, 3, 5),
            (6, 16, 16),
            (13, 300, 17),
            (100, 257, 33),
            (200, 64, 130),
            (5, 600, 40),
            (50, 700, 40),
            (7, 20, NC + 21),
            // one block of A, the columns split (decoding's shapes)
            (32, 256, 300),
            (144, 40, 600),
            // ... over several slices of K, in one parallel region when packed ahead
            (32, 700, 300),
        ] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let av: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                let bv: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
                let a = if ta { Mat::rows(&av, k, m).t() } else { Mat::rows(&av, m, k) };
                let b = if tb { Mat::rows(&bv, n, k).t() } else { Mat::rows(&bv, k, n) };
                // the same B packed ahead, for gemm_prepacked
                let packed = PackedB::new(b);
                assert_eq!(packed.shape(), [k, n]);
                let c0: Vec<f32> = (0..m * n).map(|_| rng.normal()).collect();
                for (accumulate, parallel) in [(false, false), (true, true), (false, true)] {
                    let mut want = c0.clone();
                    matmul_naive(MatMut::rows(&mut want, m, n), a, b, 0.7, accumulate);
                    for prepacked in [false, true] {
                        let mut got = c0.clone();
                        let c = RawMatMut { ptr: got.as_mut_ptr(), rows: m, cols: n, rs: n, cs: 1 };
                        // SAFETY: got holds the m × n matrix; a, b lie in their vectors.
                        unsafe {
                            if prepacked {
                                gemm_prepacked(c, a, &packed, 0.7, accumulate, parallel);
                            } else {
                                gemm(c, a, b, 0.7, accumulate, parallel);
                            }
                        }
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            let tol = 1e-4 * (1.0 + (k as f32).sqrt());
                            let at =
                                format!("{m}x{k}x{n} ta={ta} tb={tb} acc={accumulate} prepacked={prepacked} at {i}");
                            assert!((g - w).abs() < tol, "{at}: {g} vs {w}");
                        }
                    }
                }
            }
        }
        // C as a column-major (transposed) view, with an offset row stride
        let av: Vec<f32> = (0..9 * 20).map(|_| rng.normal()).collect();
        let bv: Vec<f32> = (0..20 * 18).map(|_| rng.normal()).collect();
        let (a, b) = (Mat::rows(&av, 9, 20), Mat::rows(&bv, 20, 18));
        let mut want = vec![0.0f32; 9 * 18];
        matmul_naive(MatMut::rows(&mut want, 9, 18), a, b, 1.0, false);
        let mut got = vec![0.0f32; 18 * 9];
        let c = RawMatMut { ptr: got.as_mut_ptr(), rows: 9, cols: 18, rs: 1, cs: 9 };
        // SAFETY: got holds the 18 × 9 buffer the transposed view addresses.
        unsafe { gemm(c, a, b, 1.0, false, true) };
        for i in 0..9 {
            for j in 0..18 {
                assert!((got[j * 9 + i] - want[i * 18 + j]).abs() < 1e-4);
            }
        }
    }
}
