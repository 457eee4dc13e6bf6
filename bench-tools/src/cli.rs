//! Command-line helpers shared by the benchmarks.

/// Parses `text`, a comma-separated list of names: each one of `all`'s names (`name`), a
/// group of `groups` (`("shm", &[..])`), or `all`. Duplicates are dropped, the first mention
/// keeping its place. `flag` names the option in the error.
pub fn parse_names<T: Copy + PartialEq>(
    text: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
    groups: &[(&str, &[T])],
    flag: &str,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim) {
        let some: &[T] = if part == "all" {
            all
        } else if let Some((_, g)) = groups.iter().find(|(n, _)| *n == part) {
            g
        } else if let Some(x) = all.iter().find(|&&x| name(x) == part) {
            core::slice::from_ref(x)
        } else {
            let mut known: Vec<&str> = all.iter().map(|&x| name(x)).collect();
            known.extend(groups.iter().map(|(n, _)| *n));
            return Err(format!(
                "{flag} takes names among {} or all, not {part:?}",
                known.join(", ")
            ));
        };
        for &x in some {
            if !out.contains(&x) {
                out.push(x);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_groups_and_all_parse_without_duplicates() {
        let all = [1, 2, 3];
        let name = |x: i32| ["", "one", "two", "three"][x as usize];
        let groups: &[(&str, &[i32])] = &[("low", &[1, 2])];
        let p = |t| parse_names(t, &all, name, groups, "--n");
        assert_eq!(p("three,low,one").unwrap(), [3, 1, 2]);
        assert_eq!(p("all").unwrap(), [1, 2, 3]);
        assert_eq!(p(" two , two").unwrap(), [2]);
        let e = p("one,four").unwrap_err();
        assert!(
            e.contains("--n") && e.contains("\"four\"") && e.contains("low"),
            "{e}"
        );
    }
}
