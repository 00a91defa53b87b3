//! Reads a callgrind profile (`callgrind.out.*`) for the two figures the counted benchmark
//! reports: user-space instructions executed (`Ir`) and calls into the C allocator.
//!
//! Instruction counts are exact and repeatable where seconds on a shared machine are not,
//! so a change is judged by them. The allocator calls are read from the call records
//! (`cfn=` then `calls=`), which callgrind writes for every caller of `malloc` and friends.

use std::collections::HashMap;

/// What one profile counted, over the whole process lifetime.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// `Ir`: instructions executed.
    pub instructions: u64,
    /// Calls to `malloc`, `calloc`, `posix_memalign`, `aligned_alloc` and `memalign`.
    pub allocations: u64,
    /// Calls to `realloc`.
    pub reallocations: u64,
}

impl Counts {
    /// `self - earlier`, for two runs that differ only in how much work they did.
    pub fn since(self, earlier: Counts) -> Counts {
        Counts {
            instructions: self.instructions.saturating_sub(earlier.instructions),
            allocations: self.allocations.saturating_sub(earlier.allocations),
            reallocations: self.reallocations.saturating_sub(earlier.reallocations),
        }
    }
}

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("the profile has no `events:` line naming the event Ir")]
    NoInstructionEvent,
    #[error("the profile has no `summary:` or `totals:` line")]
    NoTotals,
    #[error("line {line}: {what}")]
    Malformed { line: usize, what: String },
}

const ALLOCATORS: &[&str] = &[
    "malloc",
    "__libc_malloc",
    "calloc",
    "__libc_calloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "__libc_memalign",
];
const REALLOCATORS: &[&str] = &["realloc", "__libc_realloc"];

/// Parses a profile written with or without string compression (`cfn=(id) name` defines
/// an id that later `cfn=(id)` lines reuse).
pub fn parse(profile: &str) -> Result<Counts, ProfileError> {
    let mut instruction_column = None;
    let mut totals = None;
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut callee: Option<&str> = None;
    let mut counts = Counts::default();
    for (index, line) in profile.lines().enumerate() {
        if let Some(events) = line.strip_prefix("events:") {
            instruction_column = events.split_whitespace().position(|e| e == "Ir");
        } else if let Some(values) = line
            .strip_prefix("summary:")
            .or_else(|| line.strip_prefix("totals:"))
        {
            let column = instruction_column.ok_or(ProfileError::NoInstructionEvent)?;
            let value = values.split_whitespace().nth(column);
            totals = Some(number(value, index, "the Ir total")?);
        } else if let Some(name) = line.strip_prefix("cfn=") {
            callee = Some(function_name(name, &mut names));
        } else if let Some(call) = line.strip_prefix("calls=") {
            let calls = number(call.split_whitespace().next(), index, "a call count")?;
            match callee.take() {
                Some(f) if ALLOCATORS.contains(&f) => counts.allocations += calls,
                Some(f) if REALLOCATORS.contains(&f) => counts.reallocations += calls,
                _ => {}
            }
        } else if let Some(name) = line.strip_prefix("fn=") {
            function_name(name, &mut names);
        }
    }
    instruction_column.ok_or(ProfileError::NoInstructionEvent)?;
    counts.instructions = totals.ok_or(ProfileError::NoTotals)?;
    Ok(counts)
}

/// The function a `fn=`/`cfn=` value names, resolving compressed ids.
fn function_name<'a>(value: &'a str, names: &mut HashMap<&'a str, &'a str>) -> &'a str {
    let value = value.trim();
    let Some(rest) = value.strip_prefix('(') else {
        return bare(value);
    };
    let Some((id, name)) = rest.split_once(')') else {
        return bare(value);
    };
    let name = name.trim();
    if name.is_empty() {
        names.get(id).copied().unwrap_or("")
    } else {
        let name = bare(name);
        names.insert(id, name);
        name
    }
}

/// A function name without callgrind's recursion suffix (`malloc'2`).
fn bare(name: &str) -> &str {
    name.split('\'').next().unwrap_or(name)
}

fn number(value: Option<&str>, index: usize, what: &str) -> Result<u64, ProfileError> {
    value
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ProfileError::Malformed {
            line: index + 1,
            what: format!("{what} is not a number"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPRESSED: &str = "\
version: 1
creator: callgrind-3.19.0
events: Ir
fl=(1) lib.rs
fn=(1) mixer::report
16 900
cfn=(2) malloc
calls=3 0
16 60
cfn=(3) realloc
calls=1 0
16 20
fn=(4) other
cfn=(2)
calls=4 0
0 80
cfn=(5) malloc_usable_size
calls=7 0
0 10
summary: 123456
totals: 123456
";

    #[test]
    fn counts_instructions_and_allocator_calls_through_compressed_names() {
        let counts = parse(COMPRESSED).unwrap();
        assert_eq!(
            counts,
            Counts {
                instructions: 123_456,
                allocations: 7,
                reallocations: 1,
            }
        );
    }

    #[test]
    fn reads_uncompressed_names_and_the_ir_column_among_several_events() {
        let profile = "events: Dr Ir Dw\nfn=a\ncfn=malloc'2\ncalls=5 9\n1 2 3\nsummary: 10 20 30\n";
        let counts = parse(profile).unwrap();
        assert_eq!(counts.instructions, 20);
        assert_eq!(counts.allocations, 5);
    }

    #[test]
    fn a_profile_without_totals_is_an_error() {
        assert!(matches!(
            parse("events: Ir\nfn=a\n1 2\n"),
            Err(ProfileError::NoTotals)
        ));
        assert!(matches!(
            parse("summary: 1\n"),
            Err(ProfileError::NoInstructionEvent)
        ));
        let e = parse("events: Ir\ncfn=malloc\ncalls=x 0\n").unwrap_err();
        assert_eq!(e.to_string(), "line 3: a call count is not a number");
    }

    #[test]
    fn differences_do_not_underflow() {
        let a = Counts {
            instructions: 10,
            allocations: 2,
            reallocations: 0,
        };
        let b = Counts {
            instructions: 30,
            allocations: 5,
            reallocations: 1,
        };
        assert_eq!(b.since(a).instructions, 20);
        assert_eq!(a.since(b), Counts::default());
    }
}
