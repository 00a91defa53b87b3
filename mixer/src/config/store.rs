//! File-system configuration store: walks directory trees of multi-document YAML files
//! and turns every document into a [`Document`] (the Kubernetes-style resource envelope
//! of Istio's config: `apiVersion`, `kind`, `metadata`, `spec`).
//!
//! This module only reads and splits; it does not decide what a kind means or what a
//! missing namespace implies. Every problem is reported as a [`StoreError`] carrying the
//! file (and, when known, the 1-based line); nothing here panics on bad input. Flow
//! collections nested deeper than [`MAX_FLOW_NESTING`] are refused before parsing.
//! [`read_dirs_settled`] reads only a tree that has rested (for hot reloads).
//!
//! Walk rules (shared with [`crate::config::watch::fingerprint`] through [`walk`]):
//! * directories are walked depth-first, entries sorted byte-wise by name;
//! * entries whose name starts with `.` are skipped (this is what makes a Kubernetes
//!   ConfigMap mount, with its `..data` / `..<timestamp>` directories, read each file
//!   exactly once, through the visible symlink);
//! * regular files and symlinks to files whose names end in `.yaml` / `.yml` are read;
//! * symlinked directories are followed, but every directory is entered at most once
//!   (by canonical path), so symlink loops terminate; files are de-duplicated by
//!   canonical path too;
//! * a root that is a file is read as a single file whatever its name.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

/// One Kubernetes-style resource, read from a file or from the Kubernetes API.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where the document came from.
    pub origin: Origin,
    /// The path as found in the walk (not canonicalised); empty for a Kubernetes object.
    pub file: PathBuf,
    /// 1-based line in `file` where this document starts: the first line after its
    /// `---` separator (or line 1 for the first document of a file); 0 for a Kubernetes
    /// object.
    pub line: usize,
    /// `apiVersion`; `""` when absent.
    pub api_version: String,
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `None` when absent or null.
    pub namespace: Option<String>,
    /// `metadata.annotations`; non-string values are kept as their JSON text.
    pub annotations: BTreeMap<String, String>,
    /// `spec`; `Value::Null` when absent.
    pub spec: Json,
}

/// Where a [`Document`] came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Origin {
    /// A file of a config directory (`Document::file`, `Document::line`).
    #[default]
    File,
    /// An object of the Kubernetes API (see `crate::config::kubernetes`).
    Kubernetes {
        /// `metadata.resourceVersion` of the object read.
        resource_version: String,
    },
}

impl Document {
    /// Where it came from, for messages: `FILE:LINE`, or
    /// `kubernetes KIND/NAMESPACE/NAME (resourceVersion N)`.
    pub fn location(&self) -> String {
        match &self.origin {
            Origin::File => format!("{}:{}", self.file.display(), self.line),
            Origin::Kubernetes { resource_version } => format!(
                "kubernetes {}/{}/{} (resourceVersion {resource_version})",
                self.kind,
                self.namespace.as_deref().unwrap_or_default(),
                self.name
            ),
        }
    }
}

/// A problem found while walking or parsing the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    pub file: PathBuf,
    /// 1-based line in `file`, when the problem can be located.
    pub line: Option<usize>,
    pub message: String,
}

impl StoreError {
    fn new(file: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        StoreError {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for StoreError {}

/// Everything read from a set of config roots.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadResult {
    /// Documents in walk order (and file order within a file).
    pub documents: Vec<Document>,
    /// Walk errors first, then per-file errors in walk order.
    pub errors: Vec<StoreError>,
    /// Number of files found by the walk (each one yields documents and/or errors).
    pub files: usize,
    /// Files that hold no document and no error (empty, or only blanks and comments).
    pub empty_files: Vec<PathBuf>,
    /// How long the tree had rested when read (the age of its newest change), for a
    /// settled read of a tree with at least one entry.
    pub rested: Option<Duration>,
    /// Problems of documents that are not files (Kubernetes objects), and clashes between
    /// sources.
    pub diagnostics: Vec<crate::config::Diagnostic>,
}

/// The files selected by a walk, plus the problems met on the way.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Walk {
    /// Files to read, in deterministic walk order, as found (not canonicalised).
    pub files: Vec<PathBuf>,
    /// Directories entered, in walk order, as found.
    pub dirs: Vec<PathBuf>,
    pub errors: Vec<StoreError>,
}

/// Reads every YAML document under `dirs` (see the module docs for the walk rules).
pub fn read_dirs(dirs: &[PathBuf]) -> ReadResult {
    read_walk(walk(dirs))
}

fn read_walk(walk: Walk) -> ReadResult {
    let mut result = ReadResult {
        errors: walk.errors,
        files: walk.files.len(),
        ..ReadResult::default()
    };
    for file in walk.files {
        let (documents, errors) = read_file(&file);
        if documents.is_empty() && errors.is_empty() {
            result.empty_files.push(file);
        }
        result.documents.extend(documents);
        result.errors.extend(errors);
    }
    result
}

/// Why a read of the config tree is not one settled state of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsettled {
    /// A file or directory changed less than the settle time before the read: it may be
    /// in the middle of being written.
    #[error(
        "{}: modified {} ms ago, less than the {} ms a change must rest",
        path.display(),
        age.as_millis(),
        settle.as_millis()
    )]
    RecentlyModified {
        path: PathBuf,
        age: Duration,
        settle: Duration,
    },
    /// A file or directory changed (or appeared, or went away) while the tree was read.
    #[error("{}: changed while the configuration was being read", path.display())]
    ChangedDuringRead { path: PathBuf },
}

/// As [`read_dirs`], but only for a tree that held still: every walked file and directory
/// was last changed at least `settle` before the read, and none changed during it. A file
/// written in place (truncate, then write) goes through states that are valid YAML but
/// not what its writer meant, empty ones first; this refuses to return any of them.
pub fn read_dirs_settled(dirs: &[PathBuf], settle: Duration) -> Result<ReadResult, Unsettled> {
    let before = walk(dirs);
    let stamps = stamp_walk(&before);
    let rested = check_rested(&stamps, settle, SystemTime::now())?;
    let result = read_walk(before);
    match first_difference(&stamps, &stamp_walk(&walk(dirs))) {
        Some(path) => Err(Unsettled::ChangedDuringRead { path }),
        None => Ok(ReadResult { rested, ..result }),
    }
}

/// What a file or directory is and when it last changed: enough to notice that it was
/// written, truncated, replaced or renamed between two looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    len: u64,
    /// The later of the modification time and the status-change time (which a rename or
    /// a `touch -r` back-dating the modification time still moves forward).
    changed: SystemTime,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let meta = fs::metadata(path).ok()?;
        let at = |secs: i64, nanos: i64| {
            let secs = u64::try_from(secs).unwrap_or(0);
            let nanos = u32::try_from(nanos).unwrap_or(0);
            SystemTime::UNIX_EPOCH + Duration::new(secs, nanos.min(999_999_999))
        };
        Some(Stamp {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            changed: at(meta.mtime(), meta.mtime_nsec()).max(at(meta.ctime(), meta.ctime_nsec())),
        })
    }
}

/// Stamps of every file then every directory of `walk` (`None` for one that cannot be
/// looked at). Files first: an error then names the file written rather than its folder.
fn stamp_walk(walk: &Walk) -> Vec<(PathBuf, Option<Stamp>)> {
    walk.files
        .iter()
        .chain(&walk.dirs)
        .map(|path| (path.clone(), Stamp::of(path)))
        .collect()
}

/// How long the entries have rested (the age of the newest change; `None` without any),
/// or the first one changed less than `settle` before `now`. A change dated more than
/// `settle` in the future is a skewed clock (say, a network file system), not a write in
/// progress: waiting would never end, so it counts as long rested.
fn check_rested(
    stamps: &[(PathBuf, Option<Stamp>)],
    settle: Duration,
    now: SystemTime,
) -> Result<Option<Duration>, Unsettled> {
    let mut rested: Option<Duration> = None;
    for (path, stamp) in stamps {
        let Some(stamp) = stamp else { continue };
        let age = match now.duration_since(stamp.changed) {
            Ok(age) => age,
            Err(ahead) if ahead.duration() > settle => Duration::MAX,
            Err(_) => Duration::ZERO,
        };
        if age < settle {
            return Err(Unsettled::RecentlyModified {
                path: path.clone(),
                age,
                settle,
            });
        }
        rested = Some(rested.map_or(age, |r| r.min(age)));
    }
    Ok(rested)
}

/// The first entry that differs between two looks at the tree (as named in the second),
/// or the first that only one of them has.
fn first_difference(
    before: &[(PathBuf, Option<Stamp>)],
    after: &[(PathBuf, Option<Stamp>)],
) -> Option<PathBuf> {
    let changed = before.iter().zip(after).find(|(b, a)| b != a);
    match changed {
        Some((_, a)) => Some(a.0.clone()),
        None if before.len() != after.len() => {
            let longer = if before.len() > after.len() {
                before
            } else {
                after
            };
            Some(longer[before.len().min(after.len())].0.clone())
        }
        None => None,
    }
}

/// Reads and parses one file (any name).
fn read_file(path: &Path) -> (Vec<Document>, Vec<StoreError>) {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            return (
                Vec::new(),
                vec![StoreError::new(
                    path,
                    None,
                    format!("cannot read file: {e}"),
                )],
            );
        }
    };
    match std::str::from_utf8(&bytes) {
        Ok(text) => parse_file(path, text),
        Err(e) => {
            let valid = e.valid_up_to();
            let line = bytes[..valid].iter().filter(|&&b| b == b'\n').count() + 1;
            let message = format!("file is not valid UTF-8 (invalid byte at offset {valid})");
            (Vec::new(), vec![StoreError::new(path, Some(line), message)])
        }
    }
}

/// Splits `text` (the content of `path`) into documents and parses each one.
///
/// Documents are separated by lines that are exactly `---` (trailing whitespace and a
/// trailing `# comment` allowed). Documents holding only blank lines and comments are
/// skipped. A broken document yields a [`StoreError`] and the others are still read.
pub fn parse_file(path: &Path, text: &str) -> (Vec<Document>, Vec<StoreError>) {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for (start_line, chunk) in split_documents(text) {
        if is_blank(chunk) {
            continue;
        }
        match parse_document(path, start_line, chunk) {
            Ok(doc) => documents.push(doc),
            Err(err) => errors.push(err),
        }
    }
    (documents, errors)
}

/// Returns `(start line, text)` for every chunk between separator lines.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut chunks = Vec::new();
    let mut start_line = 1;
    let mut start_byte = 0;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_end = offset + line.len();
        if is_separator(line) {
            chunks.push((start_line, &text[start_byte..offset]));
            start_line = index + 2;
            start_byte = line_end;
        }
        offset = line_end;
    }
    chunks.push((start_line, &text[start_byte..]));
    chunks
}

const YAML_SPACE: [char; 4] = [' ', '\t', '\r', '\n'];

fn is_separator(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("---") else {
        return false;
    };
    let trimmed = rest.trim_start_matches(YAML_SPACE);
    // A comment must be preceded by whitespace (`---#x` is not a separator).
    trimmed.is_empty() || (trimmed.starts_with('#') && trimmed.len() < rest.len())
}

fn is_blank(chunk: &str) -> bool {
    chunk.lines().all(|line| {
        let line = line.trim_matches(YAML_SPACE);
        line.is_empty() || line.starts_with('#')
    })
}

/// Deepest nesting of flow collections (`[...]`, `{...}`) accepted in one document.
///
/// The YAML parser spends time quadratic in the length of a run of open flow collections
/// before its own recursion limit (128 levels) stops it: 200 KB of `{a: ` cost it
/// minutes of CPU. Configurations nest a handful of levels; 100 leaves ample room.
/// Block nesting (indentation, `- - -`) is left to the parser's limit, which it reaches
/// in linear time.
pub const MAX_FLOW_NESTING: usize = 100;

/// Where a document first opens more than [`MAX_FLOW_NESTING`] flow collections: 0-based
/// line within the document, 1-based byte column.
#[derive(Debug, PartialEq, Eq)]
struct NestingTooDeep {
    line: usize,
    column: usize,
}

/// A linear pre-scan for [`MAX_FLOW_NESTING`], run before the parser.
///
/// It knows enough YAML to skip what cannot open a collection (quoted scalars, comments,
/// block scalars, `[` / `{` inside a plain scalar of block context). Inside a flow
/// collection a quote opens a scalar only where a node starts (after `[`, `{`, `,`, or a
/// `:` separator), as in the parser: a quote inside a plain scalar (`[a ', [[[...`) is
/// text, and the brackets after it are counted.
fn check_flow_nesting(document: &str) -> Result<(), NestingTooDeep> {
    let mut scan = NestingScan::default();
    for (line, text) in document.split('\n').enumerate() {
        scan.line(text.as_bytes())
            .map_err(|column| NestingTooDeep { line, column })?;
    }
    Ok(())
}

#[derive(Default)]
struct NestingScan {
    /// Flow collections open.
    depth: usize,
    /// The quote of a quoted scalar still open at the end of the previous line.
    quote: Option<u8>,
    /// Inside a block scalar (`|`, `>`): the column its content lines are indented past.
    block_scalar_parent: Option<usize>,
    /// In flow context: a node may start at the next non-blank byte (a quote there opens
    /// a quoted scalar). Kept across lines, as a plain scalar may continue on the next.
    node_may_start: bool,
    /// In flow context: the last node ended with a quote or a bracket, so a `:` right
    /// after it separates a JSON-like key from its value.
    after_json_node: bool,
}

fn is_space_or_end(b: Option<&u8>) -> bool {
    b.is_none_or(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

impl NestingScan {
    /// Scans one line; `Err(column)` where the nesting passes the limit.
    fn line(&mut self, line: &[u8]) -> Result<(), usize> {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        if let Some(parent) = self.block_scalar_parent {
            let blank = line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'));
            if blank || indent > parent {
                return Ok(());
            }
            self.block_scalar_parent = None;
        }
        // Block context: whether a node may start here, and the column of the key or `-`
        // owning it (a block scalar's content is indented past that column).
        let mut node_start = self.depth == 0 && self.quote.is_none();
        let mut owner = indent;
        // Whether the previous byte is a space or the line start (comments).
        let mut after_space = true;
        let mut i = indent;
        while i < line.len() {
            let b = line[i];
            if let Some(quote) = self.quote {
                if quote == b'"' && b == b'\\'
                    || quote == b'\'' && b == b'\'' && line.get(i + 1) == Some(&b'\'')
                {
                    i += 1; // an escaped character
                } else if b == quote {
                    self.quote = None;
                    (self.node_may_start, self.after_json_node) = (false, true);
                }
                after_space = false;
                i += 1;
                continue;
            }
            if matches!(b, b' ' | b'\t' | b'\r') {
                after_space = true;
                i += 1;
                continue;
            }
            if b == b'#' && after_space {
                return Ok(());
            }
            if self.depth > 0 {
                self.flow_byte(line, i)?;
            } else if node_start {
                match b {
                    b'-' | b'?' | b':' if is_space_or_end(line.get(i + 1)) => owner = i,
                    b'!' | b'&' => {
                        // A tag or anchor: the node comes after it.
                        while !is_space_or_end(line.get(i + 1)) {
                            i += 1;
                        }
                    }
                    b'|' | b'>' => {
                        self.block_scalar_parent = Some(owner);
                        return Ok(());
                    }
                    _ => {
                        match b {
                            b'[' | b'{' => self.open(i)?,
                            b'"' | b'\'' => self.quote = Some(b),
                            _ => {}
                        }
                        owner = i;
                        node_start = false;
                    }
                }
            } else if b == b':' && is_space_or_end(line.get(i + 1)) {
                // After a key: its value may be a collection, a quoted or block scalar.
                node_start = true;
            }
            after_space = false;
            i += 1;
        }
        Ok(())
    }

    /// One non-blank byte inside a flow collection.
    fn flow_byte(&mut self, line: &[u8], i: usize) -> Result<(), usize> {
        let b = line[i];
        let next = line.get(i + 1);
        let (mut may_start, mut json_node) = (false, false);
        match b {
            b'[' | b'{' => {
                self.open(i)?;
                may_start = true;
            }
            b']' | b'}' => {
                self.depth = self.depth.saturating_sub(1);
                json_node = true;
            }
            b',' => may_start = true,
            b':' => {
                may_start = self.after_json_node
                    || is_space_or_end(next)
                    || matches!(next, Some(b',' | b'[' | b']' | b'{' | b'}'));
            }
            b'"' | b'\'' if self.node_may_start => self.quote = Some(b),
            _ => {}
        }
        (self.node_may_start, self.after_json_node) = (may_start, json_node);
        Ok(())
    }

    fn open(&mut self, index: usize) -> Result<(), usize> {
        self.depth += 1;
        (self.node_may_start, self.after_json_node) = (true, false);
        if self.depth > MAX_FLOW_NESTING {
            return Err(index + 1);
        }
        Ok(())
    }
}

fn parse_document(path: &Path, start_line: usize, chunk: &str) -> Result<Document, StoreError> {
    let error = |message: String| StoreError::new(path, Some(start_line), message);

    check_flow_nesting(chunk).map_err(|deep| {
        StoreError::new(
            path,
            Some(start_line + deep.line),
            format!(
                "YAML nested more than {MAX_FLOW_NESTING} levels deep (flow collections `[` / \
                 `{{`, the limit passed at column {}); not parsed",
                deep.column
            ),
        )
    })?;
    let mut yaml: Yaml = serde_yaml_ng::from_str(chunk).map_err(|e| {
        let line = e
            .location()
            .map_or(start_line, |loc| start_line + loc.line().max(1) - 1);
        let message = shift_line_refs(&e.to_string(), start_line - 1);
        StoreError::new(path, Some(line), format!("invalid YAML: {message}"))
    })?;
    yaml.apply_merge()
        .map_err(|e| error(format!("invalid YAML merge key: {e}")))?;
    let json = yaml_to_json(yaml).map_err(error)?;

    let Json::Object(mut top) = json else {
        return Err(error(format!(
            "document is not a mapping (found {})",
            json_type(&json)
        )));
    };

    let kind = required_string(top.get("kind"), "kind").map_err(error)?;
    let metadata = match top.get("metadata") {
        None | Some(Json::Null) => return Err(error("document has no metadata.name".into())),
        Some(Json::Object(m)) => m,
        Some(other) => {
            return Err(error(format!(
                "metadata is not a mapping (found {})",
                json_type(other)
            )));
        }
    };
    let name = required_string(metadata.get("name"), "metadata.name").map_err(error)?;
    let namespace = match metadata.get("namespace") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(error(format!(
                "metadata.namespace is not a string (found {})",
                json_type(other)
            )));
        }
    };
    let annotations = match metadata.get("annotations") {
        None | Some(Json::Null) => BTreeMap::new(),
        Some(Json::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Json::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        Some(other) => {
            return Err(error(format!(
                "metadata.annotations is not a mapping (found {})",
                json_type(other)
            )));
        }
    };
    let api_version = match top.get("apiVersion") {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let spec = top.remove("spec").unwrap_or(Json::Null);

    Ok(Document {
        origin: Origin::File,
        file: path.to_path_buf(),
        line: start_line,
        api_version,
        kind,
        name,
        namespace,
        annotations,
        spec,
    })
}

/// A non-empty string field, or an error naming what is missing / wrong.
fn required_string(value: Option<&Json>, what: &str) -> Result<String, String> {
    match value {
        Some(Json::String(s)) if !s.is_empty() => Ok(s.clone()),
        None | Some(Json::Null) | Some(Json::String(_)) => Err(format!("document has no {what}")),
        Some(other) => Err(format!(
            "{what} is not a string (found {})",
            json_type(other)
        )),
    }
}

fn json_type(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a sequence",
        Json::Object(_) => "a mapping",
    }
}

/// Rewrites the `line N column M` references of a parser message (relative to the
/// document) into absolute file lines.
fn shift_line_refs(message: &str, offset: usize) -> String {
    if offset == 0 {
        return message.to_string();
    }
    const MARK: &str = "line ";
    let mut out = String::with_capacity(message.len() + 8);
    let mut rest = message;
    while let Some(pos) = rest.find(MARK) {
        let (before, after) = rest.split_at(pos + MARK.len());
        out.push_str(before);
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && after[digits..].starts_with(" column ")
            && let Ok(n) = after[..digits].parse::<usize>()
        {
            out.push_str(&n.saturating_add(offset).to_string());
            rest = &after[digits..];
            continue;
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// YAML → JSON: scalar mapping keys become strings, tags are dropped, non-finite floats
/// and non-scalar keys are errors (JSON cannot represent them).
fn yaml_to_json(value: Yaml) -> Result<Json, String> {
    Ok(match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                Json::from(i)
            } else if let Some(u) = n.as_u64() {
                Json::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                match serde_json::Number::from_f64(f) {
                    Some(number) => Json::Number(number),
                    None => return Err(format!("number {n} cannot be represented in JSON")),
                }
            }
        }
        Yaml::String(s) => Json::String(s),
        Yaml::Sequence(items) => Json::Array(
            items
                .into_iter()
                .map(yaml_to_json)
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(mapping) => {
            let mut object = serde_json::Map::with_capacity(mapping.len());
            for (key, value) in mapping {
                object.insert(yaml_key(key)?, yaml_to_json(value)?);
            }
            Json::Object(object)
        }
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value)?,
    })
}

fn yaml_key(key: Yaml) -> Result<String, String> {
    match key {
        Yaml::String(s) => Ok(s),
        Yaml::Null => Ok("null".to_string()),
        Yaml::Bool(b) => Ok(b.to_string()),
        Yaml::Number(n) => Ok(n.to_string()),
        Yaml::Tagged(tagged) => yaml_key(tagged.value),
        Yaml::Sequence(_) | Yaml::Mapping(_) => Err(
            "a mapping key is itself a mapping or sequence (unresolved template \
             directive?); only scalar keys are supported"
                .to_string(),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Walk

/// Lists the files to read under `roots` (see the module docs for the rules).
pub fn walk(roots: &[PathBuf]) -> Walk {
    let mut walker = Walker::default();
    for root in roots {
        walker.root(root);
    }
    Walk {
        files: walker.files,
        dirs: walker.dirs,
        errors: walker.errors,
    }
}

#[derive(Default)]
struct Walker {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    errors: Vec<StoreError>,
    seen_files: HashSet<PathBuf>,
    seen_dirs: HashSet<PathBuf>,
}

enum Work {
    Dir(PathBuf),
    Entry(PathBuf, fs::FileType),
}

fn is_yaml_name(path: &Path) -> bool {
    path.file_name().is_some_and(|name| {
        let name = name.as_encoded_bytes();
        name.ends_with(b".yaml") || name.ends_with(b".yml")
    })
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

impl Walker {
    fn error(&mut self, path: &Path, message: String) {
        self.errors.push(StoreError::new(path, None, message));
    }

    fn root(&mut self, root: &Path) {
        match fs::metadata(root) {
            Ok(meta) if meta.is_dir() => self.tree(root.to_path_buf()),
            Ok(meta) if meta.is_file() => self.add_file(root.to_path_buf()),
            Ok(_) => self.error(root, "not a regular file or directory".to_string()),
            Err(e) => self.error(root, format!("cannot read config directory: {e}")),
        }
    }

    fn add_file(&mut self, path: PathBuf) {
        if self.seen_files.insert(canonical(&path)) {
            self.files.push(path);
        }
    }

    /// Depth-first, sorted walk with an explicit stack (no recursion depth limit).
    fn tree(&mut self, root: PathBuf) {
        let mut stack = vec![Work::Dir(root)];
        while let Some(work) = stack.pop() {
            match work {
                Work::Dir(dir) => {
                    if !self.seen_dirs.insert(canonical(&dir)) {
                        continue;
                    }
                    self.dirs.push(dir.clone());
                    let entries = match fs::read_dir(&dir) {
                        Ok(entries) => entries,
                        Err(e) => {
                            self.error(&dir, format!("cannot read directory: {e}"));
                            continue;
                        }
                    };
                    let mut listed = Vec::new();
                    for entry in entries {
                        let entry = match entry {
                            Ok(entry) => entry,
                            Err(e) => {
                                self.error(&dir, format!("cannot read directory entry: {e}"));
                                continue;
                            }
                        };
                        let name = entry.file_name();
                        if name.as_encoded_bytes().starts_with(b".") {
                            continue;
                        }
                        match entry.file_type() {
                            Ok(file_type) => listed.push((name, file_type)),
                            Err(e) => {
                                self.error(&dir.join(&name), format!("cannot stat entry: {e}"))
                            }
                        }
                    }
                    listed.sort_by(|a, b| a.0.as_encoded_bytes().cmp(b.0.as_encoded_bytes()));
                    for (name, file_type) in listed.into_iter().rev() {
                        stack.push(Work::Entry(dir.join(name), file_type));
                    }
                }
                Work::Entry(path, file_type) => {
                    if file_type.is_dir() {
                        stack.push(Work::Dir(path));
                    } else if file_type.is_file() {
                        if is_yaml_name(&path) {
                            self.add_file(path);
                        }
                    } else if file_type.is_symlink() {
                        match fs::metadata(&path) {
                            Ok(meta) if meta.is_dir() => stack.push(Work::Dir(path)),
                            Ok(meta) if meta.is_file() => {
                                if is_yaml_name(&path) {
                                    self.add_file(path);
                                }
                            }
                            // Symlinks to sockets, FIFOs, devices: never read.
                            Ok(_) => {}
                            Err(e) => {
                                if is_yaml_name(&path) {
                                    self.error(&path, format!("cannot follow symlink: {e}"));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn parse(text: &str) -> (Vec<Document>, Vec<StoreError>) {
        parse_file(Path::new("test.yaml"), text)
    }

    fn write(path: &Path, text: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, text).unwrap();
    }

    fn doc(kind: &str, name: &str) -> String {
        format!("kind: {kind}\nmetadata:\n  name: {name}\n  namespace: ns\nspec: {{}}\n")
    }

    fn names(result: &ReadResult) -> Vec<String> {
        result.documents.iter().map(|d| d.name.clone()).collect()
    }

    #[test]
    fn multi_document_start_lines_and_fields() {
        let text = "\
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: h1
  namespace: istio-system
  annotations:
    a: x
    b: 3
    c: [1, true]
spec:
  compiledAdapter: denier
  params: {status: {code: 7}}
---
kind: rule
metadata:
  name: r1
---

# a comment
kind: instance
metadata: {name: i1}
";
        let (docs, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 3);

        let h = &docs[0];
        assert_eq!(h.file, Path::new("test.yaml"));
        assert_eq!(h.line, 1);
        assert_eq!(h.api_version, "config.istio.io/v1alpha2");
        assert_eq!(h.kind, "handler");
        assert_eq!(h.name, "h1");
        assert_eq!(h.namespace.as_deref(), Some("istio-system"));
        assert_eq!(h.annotations["a"], "x");
        assert_eq!(h.annotations["b"], "3");
        assert_eq!(h.annotations["c"], "[1,true]");
        assert_eq!(
            h.spec,
            serde_json::json!({"compiledAdapter": "denier", "params": {"status": {"code": 7}}})
        );

        let r = &docs[1];
        assert_eq!(
            (r.line, r.kind.as_str(), r.name.as_str()),
            (14, "rule", "r1")
        );
        assert_eq!(r.api_version, "");
        assert_eq!(r.namespace, None);
        assert!(r.annotations.is_empty());
        assert_eq!(r.spec, Json::Null);

        assert_eq!((docs[2].line, docs[2].name.as_str()), (18, "i1"));
    }

    #[test]
    fn leading_separator_and_separator_comments() {
        let text = "---\nkind: a\nmetadata: {name: one}\n--- # next one\nkind: b\nmetadata: {name: two}\n---   \t\r\nkind: c\nmetadata: {name: three}\n";
        let (docs, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<_> = docs.iter().map(|d| (d.line, d.name.as_str())).collect();
        assert_eq!(got, vec![(2, "one"), (5, "two"), (8, "three")]);
    }

    #[test]
    fn separator_lookalikes_are_not_separators() {
        assert!(is_separator("---"));
        assert!(is_separator("---\n"));
        assert!(is_separator("--- \r\n"));
        assert!(is_separator("--- # c\n"));
        assert!(!is_separator("---#c\n"));
        assert!(!is_separator("----\n"));
        assert!(!is_separator(" ---\n"));
        assert!(!is_separator("--- a: 1\n"));
        // An indented `---` inside a block scalar stays content.
        let text = "kind: a\nmetadata: {name: one}\nspec:\n  text: |\n    x\n    ---\n    y\n";
        let (docs, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs[0].spec["text"], "x\n---\ny\n");
    }

    #[test]
    fn empty_and_comment_only_documents_are_skipped() {
        let text = "# header\n---\n---\n   \n# only a comment\n---\nkind: a\nmetadata: {name: one}\n---\n\n";
        let (docs, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].line, 7);
        assert_eq!(parse(""), (vec![], vec![]));
        assert_eq!(parse("\u{feff}# bom\n"), (vec![], vec![]));
    }

    #[test]
    fn broken_yaml_reports_absolute_line_and_continues() {
        let text = "kind: a\nmetadata: {name: one}\n---\nkind: b\nmetadata:\n  name: two\n  bad: [unclosed\n---\nkind: c\nmetadata: {name: three}\n";
        let (docs, errors) = parse(text);
        let got: Vec<_> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(got, vec!["one", "three"]);
        assert_eq!(errors.len(), 1);
        let err = &errors[0];
        assert_eq!(err.file, Path::new("test.yaml"));
        let line = err.line.unwrap();
        // The flow sequence opened on line 7 is never closed; the parser notices at or
        // after line 7 but before the next document.
        assert!((7..=8).contains(&line), "{err}");
        assert!(err.message.starts_with("invalid YAML: "), "{err}");
        assert!(err.to_string().starts_with(&format!("test.yaml:{line}: ")));

        // A precise case: a tab-indentation error on line 6 of the file.
        let text = "kind: a\nmetadata: {name: one}\n---\nkind: b\nmetadata:\n\tname: two\n";
        let (_, errors) = parse(text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(6), "{}", errors[0]);
        // The parser's own "line N column M" mentions are made absolute as well.
        assert!(errors[0].message.contains("line 6 column"), "{}", errors[0]);
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let (docs, errors) = parse("kind: a\nkind: b\nmetadata: {name: x}\n");
        assert!(docs.is_empty());
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("duplicate"), "{}", errors[0]);
    }

    #[test]
    fn missing_or_wrong_envelope_fields() {
        let cases = [
            ("metadata: {name: x}\n", "document has no kind"),
            ("kind: ''\nmetadata: {name: x}\n", "document has no kind"),
            ("kind: [a]\nmetadata: {name: x}\n", "kind is not a string"),
            ("kind: rule\n", "document has no metadata.name"),
            (
                "kind: rule\nmetadata: {namespace: ns}\n",
                "document has no metadata.name",
            ),
            (
                "kind: rule\nmetadata: {name: 5}\n",
                "metadata.name is not a string",
            ),
            ("kind: rule\nmetadata: x\n", "metadata is not a mapping"),
            (
                "kind: rule\nmetadata: {name: x, namespace: {a: 1}}\n",
                "metadata.namespace is not a string",
            ),
            (
                "kind: rule\nmetadata: {name: x, annotations: [1]}\n",
                "metadata.annotations is not a mapping",
            ),
            ("- a\n- b\n", "document is not a mapping"),
            ("just a string\n", "document is not a mapping"),
        ];
        for (text, expected) in cases {
            let full = format!("kind: ok\nmetadata: {{name: ok}}\n---\n{text}");
            let (docs, errors) = parse(&full);
            assert_eq!(docs.len(), 1, "{text}");
            assert_eq!(errors.len(), 1, "{text}");
            assert_eq!(errors[0].line, Some(4), "{text}");
            assert!(
                errors[0].message.contains(expected),
                "{text}: got {:?}",
                errors[0].message
            );
        }
    }

    #[test]
    fn yaml_to_json_conversion() {
        let text = "\
kind: a
metadata: {name: x, namespace: ~}
spec:
  base: &base {x: 1, y: two}
  copy: *base
  merged:
    <<: *base
    y: three
  keys: {1: int, true: bool, null: nul, 1.5: float}
  tagged: !custom {z: 1}
  big: 18446744073709551615
  neg: -3
  float: 2.5
";
        let (docs, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        let d = &docs[0];
        assert_eq!(d.namespace, None);
        assert_eq!(
            d.spec,
            serde_json::json!({
                "base": {"x": 1, "y": "two"},
                "copy": {"x": 1, "y": "two"},
                "merged": {"y": "three", "x": 1},
                "keys": {"1": "int", "true": "bool", "null": "nul", "1.5": "float"},
                "tagged": {"z": 1},
                "big": 18446744073709551615u64,
                "neg": -3,
                "float": 2.5,
            })
        );
        // Insertion order is kept (serde_json preserve_order).
        let keys: Vec<_> = d.spec.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys[..3], ["base", "copy", "merged"]);

        let (_, errors) = parse("kind: a\nmetadata: {name: x}\nspec: {v: .inf}\n");
        assert!(
            errors[0].message.contains("cannot be represented"),
            "{errors:?}"
        );
        let (_, errors) = parse("kind: a\nmetadata: {name: x}\nspec: {? [a, b] : 1}\n");
        assert!(errors[0].message.contains("mapping key"), "{errors:?}");
    }

    #[test]
    fn garbage_never_panics() {
        let inputs: [&str; 10] = [
            "\0\0\0\u{1}\u{2}",
            "{{ .Values.x }}\n",
            "{{- if .Values.enabled }}\nkind: a\nmetadata:\n  name: {{ .Release.Name }}\n{{- end }}\n",
            "a: *unknown\n",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
            "%YAML 1.2\n---\nkind: a\n",
            "a: b\n...\nc: d\n",
            "key: 'unterminated\n",
            "!!binary aGVsbG8=\n",
            "\r\n---\r\nkind: a\r\nmetadata:\r\n  name: crlf\r\n",
        ];
        for input in inputs {
            let _ = parse(input);
        }
        let nested = "[".repeat(100_000);
        let (_, errors) = parse(&nested);
        assert_eq!(errors.len(), 1);
        // Alias expansion bombs are refused by the parser rather than exhausting memory.
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = if prev == 0 { String::new() } else { prev.to_string() }
            ));
        }
        let (docs, errors) = parse(&bomb);
        assert!(docs.is_empty());
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn crlf_files_parse() {
        let (docs, errors) = parse(
            "kind: a\r\nmetadata:\r\n  name: one\r\n---\r\nkind: b\r\nmetadata: {name: two}\r\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<_> = docs.iter().map(|d| (d.line, d.name.as_str())).collect();
        assert_eq!(got, vec![(1, "one"), (5, "two")]);
    }

    #[test]
    fn nested_directories_sorted_and_filtered() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(&root.join("b.yaml"), &doc("rule", "b"));
        write(&root.join("a.yml"), &doc("rule", "a"));
        write(&root.join("sub/z/c.yaml"), &doc("rule", "c"));
        write(&root.join("sub/a.yaml"), &doc("rule", "sub-a"));
        write(&root.join("B.yaml"), &doc("rule", "upper-b"));
        write(&root.join("notes.txt"), "kind: not-read");
        write(&root.join("x.yaml.bak"), "kind: not-read");
        write(&root.join(".hidden.yaml"), &doc("rule", "hidden"));
        write(&root.join(".git/config.yaml"), &doc("rule", "in-dot-dir"));

        let result = read_dirs(&[root.to_path_buf()]);
        assert!(result.errors.is_empty(), "{:?}", result.errors);
        assert_eq!(result.files, 5);
        // Byte-wise order: uppercase before lowercase; depth-first.
        assert_eq!(names(&result), ["upper-b", "a", "b", "sub-a", "c"]);
        assert_eq!(result.documents[4].file, root.join("sub/z/c.yaml"));
        assert_eq!(result.documents[4].line, 1);
        // Deterministic.
        assert_eq!(read_dirs(&[root.to_path_buf()]), result);
    }

    #[test]
    fn missing_dir_and_file_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("single.conf");
        write(&file, &doc("rule", "single"));
        let missing = tmp.path().join("nope");
        let result = read_dirs(&[missing.clone(), file.clone(), file.clone()]);
        assert_eq!(names(&result), ["single"]);
        assert_eq!(result.files, 1);
        assert_eq!(result.errors.len(), 1);
        assert_eq!(result.errors[0].file, missing);
        assert_eq!(result.errors[0].line, None);
        assert!(
            result.errors[0]
                .to_string()
                .starts_with(&format!("{}: ", missing.display()))
        );
    }

    #[test]
    fn configmap_layout_is_read_exactly_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(&root.join("..2024_x/a.yaml"), &doc("rule", "a"));
        write(&root.join("..2024_x/b.yaml"), &doc("rule", "b"));
        symlink("..2024_x", root.join("..data")).unwrap();
        symlink("..data/a.yaml", root.join("a.yaml")).unwrap();
        symlink("..data/b.yaml", root.join("b.yaml")).unwrap();

        let result = read_dirs(&[root.to_path_buf()]);
        assert!(result.errors.is_empty(), "{:?}", result.errors);
        assert_eq!(names(&result), ["a", "b"]);
        assert_eq!(result.documents[0].file, root.join("a.yaml"));
        assert_eq!(result.files, 2);
    }

    #[test]
    fn symlinked_dirs_followed_without_loops() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        write(&root.join("a/one.yaml"), &doc("rule", "one"));
        write(&outside.join("two.yaml"), &doc("rule", "two"));
        symlink(&root, root.join("a/loop")).unwrap();
        symlink("..", root.join("a/up")).unwrap();
        symlink(&outside, root.join("b")).unwrap();
        symlink(&outside, root.join("c")).unwrap();
        symlink("a/one.yaml", root.join("d.yaml")).unwrap();
        symlink("missing.yaml", root.join("e.yaml")).unwrap();
        symlink("missing", root.join("f")).unwrap();

        let result = read_dirs(&[root.clone(), root.join("a")]);
        assert_eq!(names(&result), ["one", "two"]);
        assert_eq!(result.documents[1].file, root.join("b/two.yaml"));
        // The only error is the dangling `.yaml` symlink.
        assert_eq!(result.errors.len(), 1, "{:?}", result.errors);
        assert_eq!(result.errors[0].file, root.join("e.yaml"));
    }

    #[test]
    fn non_utf8_and_binary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(
            root.join("bad.yaml"),
            b"kind: a\nmetadata: {name: \xff\xfe}\n",
        )
        .unwrap();
        fs::write(root.join("bin.yaml"), [0u8, 159, 146, 150, 0, 1, 2, 3, 255]).unwrap();
        fs::write(root.join("nul.yaml"), b"\0\0\0\0kind: a\n").unwrap();
        write(&root.join("ok.yaml"), &doc("rule", "ok"));

        let result = read_dirs(&[root.to_path_buf()]);
        assert_eq!(names(&result), ["ok"]);
        assert_eq!(result.files, 4);
        assert_eq!(result.errors.len(), 3, "{:?}", result.errors);
        let bad = &result.errors[0];
        assert_eq!(bad.file, root.join("bad.yaml"));
        assert_eq!(bad.line, Some(2));
        assert!(bad.message.contains("UTF-8"), "{bad}");
        assert!(result.errors[1].message.contains("UTF-8"));
        assert_eq!(result.errors[2].file, root.join("nul.yaml"));
    }

    #[test]
    fn large_file_is_read() {
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str("---\n");
            text.push_str(&doc("rule", &format!("r{i}")));
        }
        let (docs, errors) = parse(&text);
        assert!(errors.is_empty());
        assert_eq!(docs.len(), 5000);
        assert_eq!(docs[4999].line, 4999 * 6 + 2);
    }

    fn nesting_error(text: &str) -> Option<NestingTooDeep> {
        check_flow_nesting(text).err()
    }

    #[test]
    fn flow_nesting_is_limited_with_line_and_column() {
        let at_limit = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(nesting_error(&at_limit), None);
        assert_eq!(
            nesting_error(&"[".repeat(101)),
            Some(NestingTooDeep {
                line: 0,
                column: 101
            })
        );
        assert_eq!(
            nesting_error(&"{a: ".repeat(200)).map(|e| e.column),
            Some(401)
        );
        // Closed collections do not add up; multi-line collections do.
        let siblings = "a: [[[x]]]\n".repeat(1000);
        assert_eq!(nesting_error(&siblings), None);
        let tall = format!("a:\n{}", "  [\n".repeat(150));
        assert_eq!(
            nesting_error(&tall),
            Some(NestingTooDeep {
                line: 101,
                column: 3
            })
        );

        let (docs, errors) = parse(&format!(
            "kind: a\nmetadata: {{name: one}}\n---\nkind: b\nmetadata: {{name: two}}\nspec:\n  x: {}\n",
            "[".repeat(200_000)
        ));
        assert_eq!(docs.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, Some(7), "{}", errors[0]);
        assert!(
            errors[0]
                .message
                .contains("nested more than 100 levels deep")
                && errors[0].message.contains("column 106"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn brackets_that_open_nothing_are_not_counted() {
        let deep = "[".repeat(300);
        let texts = [
            // Plain scalars of block context, keys included.
            format!("match: a{deep} == b\n"),
            format!("match: x\n  y{deep}\n"),
            format!("a{deep}: 1\n"),
            // Quoted scalars, with escapes, over several lines, in both contexts.
            format!("a: '{deep}'\nb: \"{deep}\"\n"),
            format!("a: 'it''s {deep}'\nb: \"\\\" {deep}\"\n"),
            format!("a: \"one\n  {deep}\n  two\"\n"),
            format!("a: [\"{deep}\", '{deep}', {{k: \"{deep}\"}}]\n"),
            format!("a: !!str \"{deep}\"\nb: &x '{deep}'\n"),
            // Comments.
            format!("# {deep}\na: 1 # {deep}\nb: [1, 2] # {deep}\n"),
            // Block scalars, literal and folded, under keys and sequence entries.
            format!("a: |\n  {deep}\n\n  {deep}\nb: 1\n"),
            format!("- key: >-\n    {deep}\n- |\n  {deep}\n"),
            format!("a:\n  b: |2\n     {deep}\n  c: 1\n"),
        ];
        for text in texts {
            assert_eq!(nesting_error(&text), None, "{text}");
        }
        // After a block scalar ends, counting resumes.
        let text = format!("a: |\n  text\nb: {deep}\n");
        assert_eq!(nesting_error(&text).map(|e| e.line), Some(2));
        // JSON-like flow mappings: a quote right after `:` opens a scalar.
        let json = format!("a: {{\"k\":\"{deep}\", \"j\": ['{deep}']}}\n");
        assert_eq!(nesting_error(&json), None, "{json}");
    }

    #[test]
    fn a_quote_inside_a_flow_plain_scalar_hides_nothing() {
        // The parser reads `a '` and `a:"` as plain text: the brackets after them nest.
        let deep = "[".repeat(300);
        for text in [
            format!("x: [a ',{deep}\n"),
            format!("x: [a:\",{deep}\n"),
            format!("x: [a\n  ',{deep}\n"),
            format!("x: {{k: v \",{deep}\n"),
        ] {
            assert!(nesting_error(&text).is_some(), "{text}");
        }
    }

    #[test]
    fn deep_nesting_is_refused_in_linear_time() {
        let started = std::time::Instant::now();
        for unit in ["[", "{", "{a: ", "[a, ", "a: !t ["] {
            let text = unit.repeat(1_000_000 / unit.len());
            let (docs, errors) = parse(&text);
            assert!(docs.is_empty());
            assert!(errors[0].message.contains("100 levels"), "{}", errors[0]);
        }
        // Each took seconds to minutes in the parser.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn empty_files_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(&root.join("a.yaml"), &doc("rule", "a"));
        write(&root.join("b.yaml"), "");
        write(&root.join("c.yaml"), "# nothing yet\n---\n");
        write(&root.join("d.yaml"), "kind: [\n");
        let result = read_dirs(&[root.to_path_buf()]);
        assert_eq!(
            result.empty_files,
            [root.join("b.yaml"), root.join("c.yaml")]
        );
    }

    #[test]
    fn settled_read_refuses_recent_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        write(&root.join("sub/a.yaml"), &doc("rule", "a"));
        let dirs = [root.clone()];

        let err = read_dirs_settled(&dirs, Duration::from_secs(3600)).unwrap_err();
        let Unsettled::RecentlyModified { path, age, settle } = &err else {
            panic!("{err}");
        };
        assert_eq!(path, &root.join("sub/a.yaml"));
        assert!(*age < Duration::from_secs(60) && *settle == Duration::from_secs(3600));
        assert!(err.to_string().contains("a.yaml: modified "), "{err}");

        let read = read_dirs_settled(&dirs, Duration::ZERO).unwrap();
        assert!(read.rested.is_some());
        assert_eq!(
            ReadResult {
                rested: None,
                ..read.clone()
            },
            read_dirs(&dirs)
        );
        std::thread::sleep(Duration::from_millis(60));
        let rested = read_dirs_settled(&dirs, Duration::from_millis(50)).unwrap();
        assert!(rested.rested >= Some(Duration::from_millis(50)));
        assert_eq!(rested.documents, read.documents);
    }

    #[test]
    fn stamps_see_in_place_writes_and_tree_changes() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        write(&root.join("a.yaml"), "kind: one\n");
        let stamps = || stamp_walk(&walk(std::slice::from_ref(&root)));
        let before = stamps();
        assert_eq!(first_difference(&before, &stamps()), None);

        // Same length, rewritten in place, a little later (timestamps have a coarse tick).
        std::thread::sleep(Duration::from_millis(20));
        fs::write(root.join("a.yaml"), "kind: two\n").unwrap();
        let rewritten = stamps();
        assert_eq!(
            first_difference(&before, &rewritten),
            Some(root.join("a.yaml"))
        );

        std::thread::sleep(Duration::from_millis(20));
        write(&root.join("b.yaml"), "");
        assert_eq!(
            first_difference(&rewritten, &stamps()),
            Some(root.join("b.yaml"))
        );
        let grown = stamps();
        fs::remove_file(root.join("b.yaml")).unwrap();
        assert!(first_difference(&grown, &stamps()).is_some());
    }

    #[test]
    fn rest_is_measured_against_the_clock_and_skew_is_tolerated() {
        let stamp = |changed| {
            Some(Stamp {
                device: 1,
                inode: 2,
                len: 3,
                changed,
            })
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let settle = Duration::from_secs(1);
        let at = |offset: i64| {
            let d = Duration::from_millis(offset.unsigned_abs());
            if offset < 0 { now - d } else { now + d }
        };
        let check = |changed| check_rested(&[(PathBuf::from("f"), stamp(changed))], settle, now);
        assert_eq!(check(at(-1500)), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(
            check_rested(
                &[
                    (PathBuf::from("old"), stamp(at(-9000))),
                    (PathBuf::from("new"), stamp(at(-2000))),
                    (PathBuf::from("gone"), None),
                ],
                settle,
                now
            ),
            Ok(Some(Duration::from_secs(2)))
        );
        assert!(
            check(at(5000)).is_ok(),
            "a clock far ahead does not block forever"
        );
        for young in [-999, 0, 500] {
            assert!(
                matches!(check(at(young)), Err(Unsettled::RecentlyModified { .. })),
                "{young}"
            );
        }
        assert_eq!(
            check_rested(&[(PathBuf::from("gone"), None)], settle, now),
            Ok(None)
        );
    }

    fn istio_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/istio")
    }

    #[test]
    fn real_istio_files_parse() {
        let expected: [(&str, usize); 12] = [
            (
                "install__kubernetes__helm__istio__charts__mixer__templates__config-rendered.yaml",
                21,
            ),
            (
                "install__kubernetes__helm__istio__charts__mixer__templates__config-rendered-demo.yaml",
                26,
            ),
            ("mixer__testdata__config__attributes.yaml", 2),
            ("mixer__testdata__config__deny.yaml", 3),
            ("mixer__testdata__config__prometheus.yaml", 5),
            ("samples__bookinfo__policy__mixer-rule-deny-ip.yaml", 3),
            ("samples__bookinfo__policy__mixer-rule-deny-label.yaml", 3),
            (
                "samples__bookinfo__policy__mixer-rule-deny-whitelist.yaml",
                3,
            ),
            (
                "samples__bookinfo__policy__mixer-rule-productpage-ratelimit.yaml",
                5,
            ),
            ("samples__bookinfo__telemetry__log-entry.yaml", 3),
            ("samples__bookinfo__telemetry__metrics.yaml", 3),
            ("samples__bookinfo__telemetry__tcp-metrics.yaml", 4),
        ];
        for (file, count) in expected {
            let path = istio_dir().join(file);
            let text = fs::read_to_string(&path).unwrap();
            let (docs, errors) = parse_file(&path, &text);
            assert!(errors.is_empty(), "{file}: {errors:?}");
            assert_eq!(docs.len(), count, "{file}");
            for d in &docs {
                // `spec` is a mapping, or absent (e.g. deny.yaml's `checknothing`).
                assert!(
                    d.spec.is_object() || d.spec.is_null(),
                    "{file}: {} has a non-mapping spec",
                    d.name
                );
            }
        }

        let path = istio_dir().join(expected[0].0);
        let text = fs::read_to_string(&path).unwrap();
        let (docs, _) = parse_file(&path, &text);
        let first = &docs[0];
        assert_eq!(
            (first.line, first.kind.as_str(), first.name.as_str()),
            (1, "attributemanifest", "istioproxy")
        );
        assert_eq!(first.namespace.as_deref(), Some("istio-system"));
        assert!(docs.iter().any(|d| d.kind == "DestinationRule"));
        let prom = docs
            .iter()
            .find(|d| d.kind == "handler" && d.name == "prometheus")
            .unwrap();
        assert_eq!(prom.spec["compiledAdapter"], "prometheus");
        // The line points at the document's first line in the real file.
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[prom.line - 2], "---");

        let path = istio_dir().join("samples__bookinfo__policy__mixer-rule-deny-label.yaml");
        let text = fs::read_to_string(&path).unwrap();
        let (docs, _) = parse_file(&path, &text);
        let got: Vec<_> = docs
            .iter()
            .map(|d| (d.line, d.kind.as_str(), d.namespace.clone()))
            .collect();
        assert_eq!(
            got,
            [
                (1, "handler", None),
                (12, "instance", None),
                (19, "rule", None)
            ]
        );
    }

    #[test]
    fn real_istio_dir_reads_with_errors_only_from_raw_helm() {
        let dir = istio_dir();
        let result = read_dirs(std::slice::from_ref(&dir));
        assert!(result.files >= 13);
        assert!(result.documents.len() >= 81, "{}", result.documents.len());
        assert!(!result.errors.is_empty());
        for err in &result.errors {
            assert!(err.file.starts_with(dir.join("helm-raw")), "{err}");
        }
    }

    #[test]
    fn raw_helm_template_gives_located_errors() {
        let path = istio_dir().join(
            "helm-raw/install__kubernetes__helm__istio__charts__mixer__templates__config.yaml",
        );
        let text = fs::read_to_string(&path).unwrap();
        let (_, errors) = parse_file(&path, &text);
        assert!(!errors.is_empty());
        let line_count = text.lines().count();
        for err in &errors {
            assert_eq!(err.file, path);
            let line = err.line.expect("helm errors carry a line");
            assert!((1..=line_count).contains(&line), "{err}");
        }
    }
}
