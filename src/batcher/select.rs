//! Which queued requests form the next batch under a row limit and a token budget.
//!
//! The oldest request is always taken (so no request starves, and one whose own cost exceeds
//! the budget runs alone rather than never); the rest of the batch is filled from the next
//! requests in the queue, at most [`SCAN`] of them, those whose padded length is closest to
//! the oldest's first, as long as the batch stays within `max_rows` rows and `max_tokens`
//! tokens (rows x the longest padded length in the batch). Requests of similar length thus
//! batch together and the padding a batch carries stays low.

/// How many queued requests one batch formation looks at (the oldest included): bounds the
/// work done under the queue's lock.
pub(super) const SCAN: usize = 256;

/// A batch's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) max_rows: usize,
    /// `usize::MAX` without a token budget.
    pub(super) max_tokens: usize,
}

/// A batch's cost: `rows` x `longest` padded length, saturating.
pub(super) fn cost(rows: usize, longest: usize) -> usize {
    rows.saturating_mul(longest)
}

/// Chooses a batch among `candidates` (`(rows, padded length)` per request, oldest first):
/// returns the chosen positions, ascending; position 0 always, when there is one.
pub(super) fn choose(candidates: &[(usize, usize)], limits: Limits) -> Vec<usize> {
    let Some(&(first_rows, anchor)) = candidates.first() else {
        return Vec::new();
    };
    let mut chosen = vec![0];
    let mut rows = first_rows;
    let mut longest = anchor;
    if rows >= limits.max_rows || cost(rows, longest) >= limits.max_tokens {
        return chosen;
    }
    let mut order: Vec<usize> = (1..candidates.len().min(SCAN)).collect();
    // Closest length to the oldest first; among equals, the older first (a stable sort).
    order.sort_by_key(|&i| candidates[i].1.abs_diff(anchor));
    for i in order {
        let (r, len) = candidates[i];
        let (new_rows, new_longest) = (rows + r, longest.max(len));
        if new_rows > limits.max_rows || cost(new_rows, new_longest) > limits.max_tokens {
            continue;
        }
        chosen.push(i);
        rows = new_rows;
        longest = new_longest;
        if rows == limits.max_rows {
            break;
        }
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_BUDGET: usize = usize::MAX;

    #[test]
    fn the_oldest_is_taken_even_over_budget_and_then_alone() {
        let limits = Limits {
            max_rows: 8,
            max_tokens: 100,
        };
        assert_eq!(choose(&[(2, 80), (1, 1), (1, 1)], limits), vec![0]);
        assert_eq!(choose(&[], limits), Vec::<usize>::new());
    }

    #[test]
    fn similar_lengths_batch_together_within_rows_and_tokens() {
        let limits = Limits {
            max_rows: 3,
            max_tokens: NO_BUDGET,
        };
        let queue = [(1, 10), (1, 100), (1, 12), (1, 95), (1, 9)];
        assert_eq!(choose(&queue, limits), vec![0, 2, 4]);
        let limits = Limits {
            max_rows: 10,
            max_tokens: 40,
        };
        // 9 first (2 x 10 = 20), then 12 (3 x 12 = 36); nothing long fits.
        assert_eq!(choose(&queue, limits), vec![0, 2, 4]);
        // A budget of 30 leaves out the third short one (3 x 12 = 36 > 30).
        let limits = Limits {
            max_rows: 10,
            max_tokens: 30,
        };
        assert_eq!(choose(&queue, limits), vec![0, 4]);
    }

    #[test]
    fn requests_that_do_not_fit_are_skipped_not_stopped_at() {
        let limits = Limits {
            max_rows: 4,
            max_tokens: NO_BUDGET,
        };
        assert_eq!(choose(&[(2, 5), (3, 5), (2, 5)], limits), vec![0, 2]);
    }
}
