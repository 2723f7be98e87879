//! The CPU backend's one parallel helper and threshold. Below [`PAR_MIN`] elements a loop
//! stays on the calling thread: rayon's fork-join costs more than it saves.

use rayon::prelude::*;

/// Elements below which CPU kernels run on one thread.
pub const PAR_MIN: usize = 1 << 15;
/// Elements per rayon task when a flat loop goes parallel.
pub const CHUNK: usize = 1 << 14;
/// Floats a rayon task takes at least, so that small rows do not drown in scheduling.
pub const MIN_TASK: usize = 4096;

/// Rows of `row_len` floats per rayon task: at least [`MIN_TASK`] floats.
pub fn min_rows(row_len: usize) -> usize {
    (MIN_TASK / row_len.max(1)).max(1)
}

/// `with_min_len` for a parallel iterator over `rows` rows of `row_len` floats: one piece
/// (rayon runs it inline on the calling thread) below [`PAR_MIN`] floats in all, else
/// pieces of about [`MIN_TASK`] floats.
pub fn rows_per_task(rows: usize, row_len: usize) -> usize {
    if rows * row_len < PAR_MIN {
        usize::MAX
    } else {
        min_rows(row_len)
    }
}

/// Run `f(chunk_index, chunk)` over consecutive `size`-long chunks of `out` (the last may
/// be shorter), in parallel when `parallel`: a chunk is a unit of work (a row, a scene),
/// and a rayon task takes at least [`MIN_TASK`] floats of them.
pub fn for_chunks(out: &mut [f32], size: usize, parallel: bool, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if size == 0 || out.is_empty() {
        return;
    }
    if parallel {
        out.par_chunks_mut(size).enumerate().with_min_len(min_rows(size)).for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// Run `f(row_index, row)` over the `row_len`-long rows of `out`, grouping rows into tasks
/// of about [`CHUNK`] elements, in parallel once `out` holds [`PAR_MIN`] elements.
pub fn for_rows(out: &mut [f32], row_len: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if row_len == 0 || out.is_empty() {
        return;
    }
    let rows_per = (CHUNK / row_len).max(1);
    for_chunks(out, rows_per * row_len, out.len() >= PAR_MIN, |ci, chunk| {
        for (k, row) in chunk.chunks_mut(row_len).enumerate() {
            f(ci * rows_per + k, row);
        }
    });
}
