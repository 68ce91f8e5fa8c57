//! Replica choice: power of two choices over in-flight counts, never a replica already at
//! `max_ongoing_requests`.

/// Index of the replica to use, or `None` when every replica is full. `in_flight[i]` is the
/// number of requests this router has on replica `i`.
pub fn choose(in_flight: &[u32], max_ongoing: u32) -> Option<usize> {
    let n = in_flight.len();
    match n {
        0 => return None,
        1 => return (in_flight[0] < max_ongoing).then_some(0),
        _ => {}
    }
    let a = fastrand::usize(..n);
    let mut b = fastrand::usize(..n - 1);
    if b >= a {
        b += 1;
    }
    let best = if in_flight[b] < in_flight[a] { b } else { a };
    if in_flight[best] < max_ongoing {
        return Some(best);
    }
    // Both samples are full; any replica with room still beats queueing.
    let start = fastrand::usize(..n);
    (0..n).map(|k| (start + k) % n).find(|&i| in_flight[i] < max_ongoing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_picks_a_full_replica() {
        for _ in 0..1000 {
            let i = choose(&[5, 5, 3, 5], 5).unwrap();
            assert_eq!(i, 2);
        }
        assert_eq!(choose(&[5, 5], 5), None);
        assert_eq!(choose(&[], 5), None);
        assert_eq!(choose(&[0], 1), Some(0));
    }

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let mut picks = [0u32; 2];
        for _ in 0..1000 {
            picks[choose(&[0, 4], 5).unwrap()] += 1;
        }
        assert_eq!(picks, [1000, 0]);
    }
}
