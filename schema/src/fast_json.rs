//! A fast path for validating JSON events against the common JSON Schemas,
//! in one pass over the event's bytes and without allocating.
//!
//! `jsonschema` validates a `serde_json::Value`: building that tree for a
//! 100-byte event costs about four times the check itself, and was most of
//! what a schema cost at produce (issue 14's benchmark, BENCHMARKS.md).
//! A [`Plan`] is compiled from the schemas made only of the keywords below;
//! any other keyword (`$ref` outside `#/$defs`, `allOf`, `format` other than
//! schemars' number formats, ...) gives no plan, and events are checked by
//! `jsonschema` alone.
//!
//! Invariant: [`Plan::accepts`] returns `true` only for bytes that
//! `serde_json` parses and `jsonschema` finds valid. It returns `false`
//! whenever it is not sure (an invalid event, but also an escaped key, a
//! number with an exponent, a duplicated property, ...): the caller then runs
//! `jsonschema`, which decides and words the error. So the fast path may be
//! stricter than the schema, never looser; `tests` and the fuzz target
//! `schema_check` compare the two.
//!
//! Keywords: `type`, `properties`, `required`, `additionalProperties`,
//! `maxProperties`, `items` (one schema), `minItems`, `maxItems`,
//! `uniqueItems: false`, `minLength`, `maxLength`, `pattern` (a subset of
//! regular expressions on which every engine agrees), `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum` (integers), `enum` and `const` (of
//! null, booleans, integers and strings), `$ref` to `#/$defs/NAME` or
//! `#/definitions/NAME` alone in its schema, and annotations.

use regex_automata::Input;
use regex_automata::dfa::{Automaton, dense};
use serde_json::{Map, Value};

/// Nesting of an event beyond which the fast path gives up (serde_json
/// refuses beyond 128).
const MAX_DEPTH: u32 = 64;
/// Nesting of a schema's compilation (`$ref`s included: a recursive
/// definition reaches it and gives no plan).
const MAX_SCHEMA_DEPTH: u32 = 32;
/// Literal digits beyond which a number is left to serde_json (which
/// refuses numbers beyond f64's range).
const MAX_NUMBER_DIGITS: usize = 300;

const NULL: u8 = 1;
const BOOL: u8 = 2;
/// A number written as an integer (no fraction, no exponent).
const INT: u8 = 4;
/// Any other number.
const FRACTION: u8 = 8;
const STRING: u8 = 16;
const ARRAY: u8 = 32;
const OBJECT: u8 = 64;
const ALL: u8 = 127;

/// A compiled schema, for [`Plan::accepts`].
#[derive(Debug)]
pub(crate) struct Plan {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// The types `type` lets through (ALL without it; none for `false`).
    types: u8,
    min_length: Option<u64>,
    max_length: Option<u64>,
    /// `pattern`, as a DFA: `regex` costs about 100 ns a search before
    /// the first byte (its cache pool), a third of the check of a 100-byte
    /// event; a dense DFA needs no cache.
    pattern: Option<Box<dense::DFA<Vec<u32>>>>,
    /// Inclusive bounds on integers; with either, a fraction is left to
    /// jsonschema.
    min: Option<i64>,
    max: Option<i64>,
    object: Option<Box<ObjectRules>>,
    array: Option<Box<ArrayRules>>,
    /// `enum` (or `const`): the values allowed.
    choices: Option<Vec<Literal>>,
}

#[derive(Debug)]
struct ObjectRules {
    /// Names (as bytes) and schemas of `properties` and of `required`
    /// names absent from them (any value).
    properties: Vec<(Box<[u8]>, Node)>,
    /// The [`name_head`] of each of `properties`.
    heads: Vec<u64>,
    /// Bit i: property i is required.
    required: u64,
    additional: Additional,
    max_properties: Option<u64>,
}

#[derive(Debug)]
enum Additional {
    Any,
    Forbidden,
    Schema(Node),
}

#[derive(Debug, Default)]
struct ArrayRules {
    items: Option<Node>,
    min_items: Option<u64>,
    max_items: Option<u64>,
}

/// A number as the scan reads it.
enum Number {
    /// Written as an integer, within i64.
    Int(i64),
    /// Written as an integer, beyond i64.
    Big,
    /// Written with a fraction.
    Fraction,
}

#[derive(Debug, PartialEq)]
enum Literal {
    Null,
    Bool(bool),
    Int(i64),
    Str(Box<str>),
}

impl Plan {
    /// The plan of `schema`, or `None` when it uses a keyword the fast path
    /// does not know.
    pub(crate) fn compile(schema: &Value) -> Option<Plan> {
        let root = compile(schema, schema, 0)?;
        Some(Plan { root })
    }

    /// True only if `bytes` is one JSON document valid under the schema
    /// (see the module's invariant); false: not sure.
    pub(crate) fn accepts(&self, bytes: &[u8]) -> bool {
        // Bytes beyond ASCII are valid only in strings, which check their
        // UTF-8 (`Scan::string`).
        let mut scan = Scan { bytes, at: 0 };
        scan.ws();
        if !scan.value(&self.root, 0) {
            return false;
        }
        scan.ws();
        scan.at == bytes.len()
    }
}

fn compile(schema: &Value, root: &Value, depth: u32) -> Option<Node> {
    if depth > MAX_SCHEMA_DEPTH {
        return None;
    }
    let map = match schema {
        Value::Bool(true) => return Some(Node::any()),
        Value::Bool(false) => return Some(Node::default()),
        Value::Object(map) => map,
        _ => return None,
    };
    if let Some(reference) = map.get("$ref") {
        // Alone but for annotations: its target is the whole schema.
        if map.keys().any(|k| k != "$ref" && !annotation(k, depth)) {
            return None;
        }
        let name = reference.as_str()?;
        let target = name
            .strip_prefix("#/$defs/")
            .and_then(|n| root.get("$defs")?.get(n))
            .or_else(|| {
                name.strip_prefix("#/definitions/")
                    .and_then(|n| root.get("definitions")?.get(n))
            })?;
        return compile(target, root, depth + 1);
    }
    let mut node = Node::any();
    let mut required: &[Value] = &[];
    let mut properties: Option<&Map<String, Value>> = None;
    let mut additional = Additional::Any;
    let mut max_properties = None;
    let mut array = ArrayRules::default();
    let mut has_array = false;
    for (key, value) in map {
        match key.as_str() {
            "type" => node.types = types(value)?,
            "properties" => properties = Some(value.as_object()?),
            "required" => required = value.as_array()?,
            "additionalProperties" => {
                additional = match value {
                    Value::Bool(true) => Additional::Any,
                    Value::Bool(false) => Additional::Forbidden,
                    other => Additional::Schema(compile(other, root, depth + 1)?),
                }
            }
            "maxProperties" => max_properties = Some(value.as_u64()?),
            "items" => {
                // The array form (draft 7's tuples) is not compiled.
                if !(value.is_object() || value.is_boolean()) {
                    return None;
                }
                array.items = Some(compile(value, root, depth + 1)?);
                has_array = true;
            }
            "minItems" => {
                array.min_items = Some(value.as_u64()?);
                has_array = true;
            }
            "maxItems" => {
                array.max_items = Some(value.as_u64()?);
                has_array = true;
            }
            "uniqueItems" if value == &Value::Bool(false) => {}
            "minLength" => node.min_length = Some(value.as_u64()?),
            "maxLength" => node.max_length = Some(value.as_u64()?),
            "pattern" => node.pattern = Some(Box::new(dfa(&pattern(value.as_str()?)?)?)),
            "minimum" => node.min = Some(max_opt(node.min, value.as_i64()?)),
            "maximum" => node.max = Some(min_opt(node.max, value.as_i64()?)),
            "exclusiveMinimum" => {
                node.min = Some(max_opt(node.min, value.as_i64()?.checked_add(1)?))
            }
            "exclusiveMaximum" => {
                node.max = Some(min_opt(node.max, value.as_i64()?.checked_sub(1)?))
            }
            "enum" => {
                if node.choices.is_some() {
                    return None;
                }
                node.choices = Some(
                    value
                        .as_array()?
                        .iter()
                        .map(literal)
                        .collect::<Option<_>>()?,
                );
            }
            "const" => {
                if node.choices.is_some() {
                    return None;
                }
                node.choices = Some(vec![literal(value)?]);
            }
            // schemars writes these for Rust's number types; jsonschema
            // knows none of them, so asserts nothing.
            "format"
                if matches!(
                    value.as_str(),
                    Some(
                        "int8"
                            | "int16"
                            | "int32"
                            | "int64"
                            | "uint8"
                            | "uint16"
                            | "uint32"
                            | "uint64"
                            | "uint"
                            | "int"
                            | "float"
                            | "double"
                    )
                ) => {}
            // Definitions are compiled when a `$ref` names them.
            "$defs" | "definitions" if depth == 0 => {}
            other if annotation(other, depth) => {}
            _ => return None,
        }
    }
    if properties.is_some() || !required.is_empty() || max_properties.is_some() {
        let mut rules = ObjectRules {
            properties: Vec::new(),
            heads: Vec::new(),
            required: 0,
            additional,
            max_properties,
        };
        for (name, schema) in properties.into_iter().flatten() {
            rules
                .properties
                .push((name.as_bytes().into(), compile(schema, root, depth + 1)?));
        }
        for name in required {
            let name = name.as_str()?.as_bytes();
            let i = match rules.properties.iter().position(|(n, _)| &**n == name) {
                Some(i) => i,
                None => {
                    rules.properties.push((name.into(), Node::any()));
                    rules.properties.len() - 1
                }
            };
            rules.required |= 1u64.checked_shl(u32::try_from(i).ok()?)?;
        }
        // A property's seen bit must exist.
        if rules.properties.len() > 64 {
            return None;
        }
        rules.heads = rules.properties.iter().map(|(n, _)| name_head(n)).collect();
        node.object = Some(Box::new(rules));
    } else if !matches!(additional, Additional::Any) {
        node.object = Some(Box::new(ObjectRules {
            properties: Vec::new(),
            heads: Vec::new(),
            required: 0,
            additional,
            max_properties: None,
        }));
    }
    if has_array {
        node.array = Some(Box::new(array));
    }
    Some(node)
}

/// Keywords that assert nothing (`$schema` and `$id` only at the root).
fn annotation(key: &str, depth: u32) -> bool {
    matches!(
        key,
        "title"
            | "description"
            | "$comment"
            | "examples"
            | "default"
            | "deprecated"
            | "readOnly"
            | "writeOnly"
    ) || (depth == 0 && matches!(key, "$schema" | "$id"))
}

fn max_opt(a: Option<i64>, b: i64) -> i64 {
    a.map_or(b, |a| a.max(b))
}

fn min_opt(a: Option<i64>, b: i64) -> i64 {
    a.map_or(b, |a| a.min(b))
}

fn types(value: &Value) -> Option<u8> {
    let one = |name: &Value| -> Option<u8> {
        Some(match name.as_str()? {
            "null" => NULL,
            "boolean" => BOOL,
            "integer" => INT,
            "number" => INT | FRACTION,
            "string" => STRING,
            "array" => ARRAY,
            "object" => OBJECT,
            _ => return None,
        })
    };
    match value {
        Value::Array(names) => names.iter().try_fold(0, |acc, n| Some(acc | one(n)?)),
        name => one(name),
    }
}

fn literal(value: &Value) -> Option<Literal> {
    Some(match value {
        Value::Null => Literal::Null,
        Value::Bool(b) => Literal::Bool(*b),
        Value::Number(n) => Literal::Int(n.as_i64()?),
        Value::String(s) => Literal::Str(s.as_str().into()),
        _ => return None,
    })
}

/// The DFA of a translated pattern, unless it would take more than 1 MiB.
fn dfa(pattern: &str) -> Option<dense::DFA<Vec<u32>>> {
    let config = dense::Config::new()
        .dfa_size_limit(Some(1 << 20))
        .determinize_size_limit(Some(1 << 20));
    dense::Builder::new().configure(config).build(pattern).ok()
}

/// A regular expression of JSON Schema (ECMA-262) as a `regex` one, when it
/// is in the subset where the two find the same matches, or a stricter one
/// (`\d` and `\w` as ASCII, outside negated classes); `None` otherwise.
fn pattern(ecma: &str) -> Option<String> {
    let mut out = String::with_capacity(ecma.len() + 8);
    let mut chars = ecma.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '^' | '$' | '|' | ')' | '*' | '+' | '?' => out.push(c),
            '(' => {
                out.push('(');
                if chars.peek() == Some(&'?') {
                    chars.next();
                    // Only a plain non-capturing group.
                    if chars.next() != Some(':') {
                        return None;
                    }
                    out.push_str("?:");
                }
            }
            '{' => {
                // A counted repetition, strictly `{n}`, `{n,}` or `{n,m}`:
                // ECMA reads anything else as a literal brace.
                let mut body = String::new();
                loop {
                    match chars.next()? {
                        '}' => break,
                        d @ ('0'..='9' | ',') => body.push(d),
                        _ => return None,
                    }
                }
                let mut parts = body.splitn(2, ',');
                let low = parts.next()?;
                if low.is_empty() || low.len() > 3 {
                    return None;
                }
                if let Some(high) = parts.next()
                    && (high.len() > 3 || high.contains(','))
                {
                    return None;
                }
                out.push('{');
                out.push_str(&body);
                out.push('}');
            }
            '[' => {
                out.push('[');
                let negated = chars.peek() == Some(&'^');
                if negated {
                    chars.next();
                    out.push('^');
                }
                let mut first = true;
                loop {
                    let c = chars.next()?;
                    match c {
                        ']' if !first => break,
                        '\\' => {
                            let e = chars.next()?;
                            match e {
                                'd' if !negated => out.push_str("0-9"),
                                'w' if !negated => out.push_str("A-Za-z0-9_"),
                                e if literal_escape(e) => {
                                    out.push('\\');
                                    out.push(e);
                                }
                                _ => return None,
                            }
                        }
                        // A range, or itself at an end: the same in both.
                        c if plain(c) => out.push(c),
                        _ => return None,
                    }
                    first = false;
                }
                out.push(']');
            }
            '\\' => {
                let e = chars.next()?;
                match e {
                    'd' => out.push_str("[0-9]"),
                    'w' => out.push_str("[A-Za-z0-9_]"),
                    e if literal_escape(e) => {
                        out.push('\\');
                        out.push(e);
                    }
                    _ => return None,
                }
            }
            c if plain(c) => {
                if c == '-' {
                    out.push_str("\\-");
                } else {
                    out.push(c);
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// A character that stands for itself in both dialects, in and out of a
/// class (`-` is escaped by the caller).
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || " _-:@/,;=#%&'\"!<>~`".contains(c)
}

/// An escaped character that means itself in both dialects.
fn literal_escape(c: char) -> bool {
    ".-/+*?()[]{}|^$\\".contains(c)
}

/// The index of the property `name` (whose [`name_head`] is `head`),
/// searched from `from` on, then from the start.
fn find(rules: &ObjectRules, from: usize, name: &[u8], head: u64) -> Option<usize> {
    let count = rules.properties.len();
    let is = |&i: &usize| {
        let n = &rules.properties[i].0;
        // Equal heads and lengths are equal names up to 8 bytes.
        rules.heads[i] == head && n.len() == name.len() && (n.len() <= 8 || n[8..] == name[8..])
    };
    (from.min(count)..count).chain(0..from.min(count)).find(is)
}

/// The high bits of the bytes of `word` (little-endian) that end a plain
/// run of a string: `"`, `\`, a control character, a byte beyond ASCII. The
/// classic "has a zero byte" and "has a byte less than n" tests: a borrow
/// runs only upward from a byte that is one, so the lowest bit set is
/// exactly the first such byte (bytes above it may be flagged wrongly).
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    has_zero(word ^ (ONES * u64::from(b'"')))
        | has_zero(word ^ (ONES * u64::from(b'\\')))
        | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
        | (word & HIGHS)
}

/// The first `min(8, len)` bytes of a property name, zero-padded: one
/// comparison decides most lookups (see [`find`]).
fn name_head(name: &[u8]) -> u64 {
    let mut head = [0; 8];
    for (h, b) in head.iter_mut().zip(name) {
        *h = *b;
    }
    u64::from_le_bytes(head)
}

/// The schema `true`: any value (its syntax is still checked).
static ANY: Node = Node {
    types: ALL,
    min_length: None,
    max_length: None,
    pattern: None,
    min: None,
    max: None,
    object: None,
    array: None,
    choices: None,
};

impl Node {
    fn any() -> Node {
        Node {
            types: ALL,
            ..Node::default()
        }
    }
}

/// The scan of one event.
struct Scan<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scan<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The [`name_head`] of `key`, the string just read (the cursor right
    /// after its closing quote): eight bytes of the input from its first,
    /// when the input has them.
    #[inline]
    fn head_of(&self, key: &[u8]) -> u64 {
        debug_assert_eq!(
            self.at
                .checked_sub(1 + key.len())
                .map(|start| &self.bytes[start..self.at - 1]),
            Some(key)
        );
        let word = self
            .at
            .checked_sub(1 + key.len())
            .and_then(|start| self.bytes.get(start..))
            .and_then(<[u8]>::first_chunk::<8>);
        match word {
            Some(w) if key.len() >= 8 => u64::from_le_bytes(*w),
            Some(w) => u64::from_le_bytes(*w) & ((1 << (8 * key.len())) - 1),
            None => name_head(key),
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    #[inline]
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self, w: &[u8]) -> bool {
        if self.bytes[self.at..].starts_with(w) {
            self.at += w.len();
            true
        } else {
            false
        }
    }

    /// One value at the cursor, valid under `node`.
    fn value(&mut self, node: &Node, depth: u32) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        match self.peek() {
            Some(b'{') => {
                node.types & OBJECT != 0
                    && node.choices.is_none()
                    && self.object(node.object.as_deref(), depth)
            }
            Some(b'[') => {
                node.types & ARRAY != 0
                    && node.choices.is_none()
                    && self.array(node.array.as_deref(), depth)
            }
            Some(b'"') => {
                let Some((text, escaped, chars)) = self.string() else {
                    return false;
                };
                node.types & STRING != 0
                    && node.min_length.is_none_or(|n| chars >= n)
                    && node.max_length.is_none_or(|n| chars <= n)
                    // The raw bytes are the text only without escapes.
                    && (!escaped || (node.pattern.is_none() && node.choices.is_none()))
                    // A quit (no byte makes this DFA quit) is "not sure".
                    && node.pattern.as_ref().is_none_or(|p| {
                        p.try_search_fwd(&Input::new(text).earliest(true))
                            .is_ok_and(|m| m.is_some())
                    })
                    && node.choices.as_ref().is_none_or(|c| {
                        c.iter()
                            .any(|l| matches!(l, Literal::Str(s) if s.as_bytes() == text))
                    })
            }
            Some(b't') => self.word(b"true") && self.boolean(node, true),
            Some(b'f') => self.word(b"false") && self.boolean(node, false),
            Some(b'n') => {
                self.word(b"null")
                    && node.types & NULL != 0
                    && node
                        .choices
                        .as_ref()
                        .is_none_or(|c| c.contains(&Literal::Null))
            }
            Some(b'-' | b'0'..=b'9') => match self.number() {
                Some(Number::Int(i)) => {
                    node.types & INT != 0
                        && node.min.is_none_or(|m| i >= m)
                        && node.max.is_none_or(|m| i <= m)
                        && node
                            .choices
                            .as_ref()
                            .is_none_or(|c| c.contains(&Literal::Int(i)))
                }
                Some(Number::Fraction) => {
                    node.types & FRACTION != 0
                        && node.min.is_none()
                        && node.max.is_none()
                        && node.choices.is_none()
                }
                // Beyond i64 (or not a number serde_json reads): left to
                // jsonschema.
                Some(Number::Big) | None => false,
            },
            _ => false,
        }
    }

    fn boolean(&self, node: &Node, b: bool) -> bool {
        node.types & BOOL != 0
            && node
                .choices
                .as_ref()
                .is_none_or(|c| c.contains(&Literal::Bool(b)))
    }

    fn object(&mut self, rules: Option<&ObjectRules>, depth: u32) -> bool {
        let mut seen = 0u64;
        // Where the search for the next name starts: after the last one
        // found, as events usually list properties in the schema's order.
        let mut next = 0;
        let count = self.list(b'}', |scan| {
            let Some((key, false, _)) = scan.string() else {
                // An escaped key is left to jsonschema.
                return false;
            };
            let head = scan.head_of(key);
            scan.ws();
            if !scan.eat(b':') {
                return false;
            }
            scan.ws();
            let schema = match rules {
                None => &ANY,
                Some(r) => match find(r, next, key, head) {
                    Some(i) => {
                        next = i + 1;
                        // A repeated name: serde_json keeps the last value;
                        // left to jsonschema.
                        let bit = 1u64 << i;
                        if seen & bit != 0 {
                            return false;
                        }
                        seen |= bit;
                        &r.properties[i].1
                    }
                    None => match &r.additional {
                        Additional::Any => &ANY,
                        Additional::Forbidden => return false,
                        Additional::Schema(s) => s,
                    },
                },
            };
            scan.value(schema, depth + 1)
        });
        count.is_some_and(|count| {
            rules.is_none_or(|r| {
                seen & r.required == r.required && r.max_properties.is_none_or(|m| count <= m)
            })
        })
    }

    fn array(&mut self, rules: Option<&ArrayRules>, depth: u32) -> bool {
        let items = rules.and_then(|r| r.items.as_ref()).unwrap_or(&ANY);
        let count = self.list(b']', |scan| scan.value(items, depth + 1));
        count.is_some_and(|count| {
            rules.is_none_or(|r| {
                r.min_items.is_none_or(|m| count >= m) && r.max_items.is_none_or(|m| count <= m)
            })
        })
    }

    /// The members of an object or the items of an array, the cursor on
    /// its opening bracket: `each` reads one (after its whitespace). Their
    /// count, or `None` if one fails or the list is malformed.
    fn list(&mut self, close: u8, mut each: impl FnMut(&mut Self) -> bool) -> Option<u64> {
        self.at += 1; // `{` or `[`
        self.ws();
        if self.eat(close) {
            return Some(0);
        }
        let mut count = 0;
        loop {
            self.ws();
            if !each(self) {
                return None;
            }
            count += 1;
            self.ws();
            if self.eat(close) {
                return Some(count);
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// A string at the cursor: its raw bytes between the quotes, whether it
    /// has escapes, and its length in characters; `None` if it is not a
    /// string serde_json reads the same way (invalid UTF-8, a control
    /// character; a `\u` escape of a surrogate is left to it).
    #[inline]
    fn string(&mut self) -> Option<(&'a [u8], bool, u64)> {
        if !self.eat(b'"') {
            return None;
        }
        let bytes = self.bytes;
        let start = self.at;
        let mut at = start;
        let mut high = false;
        // Bytes of escapes beyond the one character each stands for.
        let mut overhead = 0;
        loop {
            // Eight bytes at a time to the first special one, then that
            // byte (one by one only in the last seven bytes of the input).
            if let Some(word) = bytes.get(at..).and_then(<[u8]>::first_chunk::<8>) {
                let special = special_bytes(u64::from_le_bytes(*word));
                if special == 0 {
                    at += 8;
                    continue;
                }
                at += (special.trailing_zeros() / 8) as usize;
            }
            let b = *bytes.get(at)?;
            if b == b'"' {
                break;
            } else if b == b'\\' {
                match *bytes.get(at + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                        at += 2;
                        overhead += 1;
                    }
                    b'u' => {
                        let hex = bytes.get(at + 2..at + 6)?;
                        let hex = std::str::from_utf8(hex).ok()?;
                        let unit = u16::from_str_radix(hex, 16).ok()?;
                        if hex.starts_with('+') || (0xD800..0xE000).contains(&unit) {
                            return None;
                        }
                        at += 6;
                        overhead += 5;
                    }
                    _ => return None,
                }
            } else if b < 0x20 {
                // A control character, which JSON strings may not hold.
                return None;
            } else {
                high |= b >= 0x80;
                at += 1;
            }
        }
        let text = &bytes[start..at];
        self.at = at + 1;
        let chars = if high {
            // serde_json refuses invalid UTF-8; a character starts at each
            // byte that is not a continuation byte (0b10xx_xxxx), and the
            // escapes are ASCII.
            std::str::from_utf8(text).ok()?;
            text.iter().filter(|&&b| (b as i8) >= -0x40).count()
        } else {
            text.len()
        };
        Some((text, overhead > 0, (chars - overhead) as u64))
    }

    /// A number at the cursor, in JSON's grammar; `None` if it is not
    /// one, or one left to serde_json.
    fn number(&mut self) -> Option<Number> {
        let start = self.at;
        let negative = self.eat(b'-');
        // The integer part's magnitude, negated (i64's range is wider
        // below zero); `None` once beyond it.
        let mut value = Some(0i64);
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    value = value
                        .and_then(|v| v.checked_mul(10))
                        .and_then(|v| v.checked_sub(i64::from(d - b'0')));
                    self.at += 1;
                }
            }
            _ => return None,
        }
        let mut integer = true;
        if self.eat(b'.') {
            integer = false;
            let before = self.at;
            self.digits();
            if self.at == before {
                return None;
            }
        }
        // An exponent can put a number beyond f64, which serde_json
        // refuses: left to it.
        if matches!(self.peek(), Some(b'e' | b'E')) || self.at - start > MAX_NUMBER_DIGITS {
            return None;
        }
        if !integer {
            return Some(Number::Fraction);
        }
        let value = if negative {
            value
        } else {
            value.and_then(i64::checked_neg)
        };
        Some(value.map_or(Number::Big, Number::Int))
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(schema: &str) -> Option<Plan> {
        Plan::compile(&serde_json::from_str(schema).unwrap())
    }

    const ORDER: &str = r#"{
      "type": "object",
      "properties": {
        "id": {"type": "string", "pattern": "^o-[0-9]+$"},
        "customer": {"type": "string", "maxLength": 8},
        "qty": {"type": "integer", "minimum": 1},
        "state": {"enum": ["new", "paid"]},
        "note": {"type": ["string", "null"]},
        "lines": {"type": "array", "items": {"type": "number"}, "maxItems": 3}
      },
      "required": ["id", "qty"],
      "additionalProperties": false
    }"#;

    #[test]
    fn accepts_the_valid_and_leaves_the_rest() {
        let p = plan(ORDER).expect("a plan");
        for ok in [
            r#"{"id":"o-1","qty":1}"#,
            r#" {"id" : "o-12", "qty": 3, "customer": "élodie", "state": "paid", "note": null, "lines": [1, 2.5, -0.0]} "#,
        ] {
            assert!(p.accepts(ok.as_bytes()), "{ok}");
        }
        for unsure in [
            r#"{"id":"o-1"}"#,
            r#"{"id":"o-1","qty":0}"#,
            r#"{"id":"x-1","qty":1}"#,
            r#"{"id":"o-1","qty":1,"extra":1}"#,
            r#"{"id":"o-1","qty":1.0}"#,
            r#"{"id":"o-1","qty":1e0}"#,
            r#"{"id":"o-1","qty":1,"qty":2}"#,
            r#"{"id":"o\u002d1","qty":1}"#,
            r#"{"id":"o-1","qty":1,"customer":"123456789"}"#,
            r#"{"id":"o-1","qty":1,"state":"lost"}"#,
            r#"{"id":"o-1","qty":1,"lines":[1,2,3,4]}"#,
            r#"{"id":"o-1","qty":1} x"#,
            r#"{"id":"o-1","qty":01}"#,
            r#"{"id":"o-1","qty":1,}"#,
            "{\"id\":\"o-1\n\",\"qty\":1}",
            r#"{"id":"o-1","qty":99999999999999999999}"#,
        ] {
            assert!(!p.accepts(unsure.as_bytes()), "{unsure}");
        }
        assert!(!p.accepts(b"{\"id\":\"o-1\",\"qty\":1,\"note\":\"\xff\"}"));
    }

    #[test]
    fn the_lowest_special_bit_is_the_first_special_byte() {
        let special = |b: u8| b == b'"' || b == b'\\' || !(0x20..0x80).contains(&b);
        let first = |word: [u8; 8]| word.iter().position(|&b| special(b));
        let found = |word: [u8; 8]| {
            let bits = special_bytes(u64::from_le_bytes(word));
            (bits != 0).then_some(bits.trailing_zeros() as usize / 8)
        };
        // Each byte value at each place, among plain ones...
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = b;
                assert_eq!(found(word), first(word), "{b} at {at}");
            }
        }
        // ...and words of bytes drawn from the edges, where borrows run.
        let edges = [
            0, 1, 0x1f, 0x20, 0x21, b'"', b'#', b'\\', 0x5d, 0x7f, 0x80, 0xff,
        ];
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let word = x.to_le_bytes().map(|r| edges[usize::from(r) % edges.len()]);
            assert_eq!(found(word), first(word), "{word:?}");
        }
    }

    #[test]
    fn property_heads_match_names_of_any_length() {
        let p = plan(
            r#"{"properties": {"a": {"type": "integer"}, "ab": {"type": "string"},
                "abcdefgh": {"type": "integer"}, "abcdefghi": {"type": "string"},
                "abcdefghij": {"type": "integer"}}, "additionalProperties": false}"#,
        )
        .unwrap();
        assert!(p.accepts(br#"{"abcdefghij":1,"abcdefghi":"x","abcdefgh":2,"ab":"y","a":3}"#));
        for wrong in [
            r#"{"abcdefghi":1}"#,
            r#"{"abcdefghij":"x"}"#,
            r#"{"abcdefgh":"x"}"#,
            r#"{"abcdefghk":1}"#,
            r#"{"abc":1}"#,
            r#"{"b":1}"#,
        ] {
            assert!(!p.accepts(wrong.as_bytes()), "{wrong}");
        }
        // A name at the very end of the input, with fewer than 8 bytes left.
        let p = plan(r#"{"properties": {"a": {}}, "additionalProperties": false}"#).unwrap();
        assert!(p.accepts(br#"{"a":1}"#));
        assert!(!p.accepts(br#"{"b":1}"#));
    }

    #[test]
    fn patterns_search_anywhere_unless_anchored() {
        let p = plan(r#"{"pattern": "b[0-9]{2}"}"#).unwrap();
        assert!(p.accepts(br#""ab12c""#) && p.accepts(br#""b99""#));
        assert!(!p.accepts(br#""ab1c""#));
        let p = plan(r#"{"pattern": "^(?:ab|cd)+$"}"#).unwrap();
        assert!(p.accepts(br#""abcdab""#) && !p.accepts(br#""abc""#) && !p.accepts(br#"" ab""#));
        assert!(
            plan(r#"{"pattern": "[a-z]{1,999}[0-9]{1,999}[a-z]{1,999}"}"#).is_none(),
            "too big a DFA"
        );
    }

    #[test]
    fn integers_are_read_to_the_ends_of_i64() {
        let p = plan(r#"{"type": "integer", "minimum": -9223372036854775808}"#).unwrap();
        for (text, ok) in [
            ("9223372036854775807", true),
            ("-9223372036854775808", true),
            ("-0", true),
            ("9223372036854775808", false),
            ("-9223372036854775809", false),
            ("1.5", false),
        ] {
            assert_eq!(p.accepts(text.as_bytes()), ok, "{text}");
        }
        let p = plan(r#"{"type": "integer", "maximum": -2}"#).unwrap();
        assert!(p.accepts(b"-2") && !p.accepts(b"-1") && !p.accepts(b"12"));
    }

    #[test]
    fn unknown_keywords_give_no_plan() {
        for schema in [
            r#"{"allOf": [{"type": "string"}]}"#,
            r#"{"type": "string", "format": "email"}"#,
            r#"{"type": "number", "minimum": 0.5}"#,
            r#"{"type": "array", "items": [{"type": "string"}]}"#,
            r#"{"type": "string", "pattern": "^a.b$"}"#,
            r#"{"type": "string", "pattern": "(?=a)"}"#,
            r#"{"$ref": "https://example.com/s.json"}"#,
            r##"{"$defs": {"n": {"$ref": "#/$defs/n"}}, "$ref": "#/$defs/n"}"##,
            r#"{"properties": {"a": {"$schema": "x"}}}"#,
        ] {
            assert!(plan(schema).is_none(), "{schema}");
        }
    }

    #[test]
    fn patterns_in_the_common_subset_translate() {
        assert_eq!(pattern("^o-[0-9]+$").as_deref(), Some(r"^o\-[0-9]+$"));
        assert_eq!(
            pattern(r"^\d{3}(?:-\w+)?$").as_deref(),
            Some(r"^[0-9]{3}(?:\-[A-Za-z0-9_]+)?$")
        );
        assert_eq!(
            pattern(r"[^\d]"),
            None,
            "a negated class widens with ASCII \\d"
        );
        assert_eq!(pattern("a{,3}"), None, "ECMA reads it as literal text");
        assert_eq!(pattern("a.b"), None);
    }

    #[test]
    fn schemars_definitions_compile() {
        let p = plan(
            r##"{"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "Order",
            "type": "object", "properties": {"line": {"$ref": "#/$defs/Line"},
            "n": {"type": "integer", "format": "uint32", "minimum": 0}},
            "required": ["line", "n"],
            "$defs": {"Line": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}}}"##,
        )
        .expect("a plan");
        assert!(p.accepts(br#"{"line":{"sku":"a"},"n":4}"#));
        assert!(!p.accepts(br#"{"line":{},"n":4}"#));
        assert!(!p.accepts(br#"{"line":{"sku":"a"},"n":-4}"#));
    }

    /// Schemas the differential test runs: each compiles to a plan.
    const SCHEMAS: &[&str] = &[
        ORDER,
        r#"{"type": ["integer", "string"], "minimum": -3, "exclusiveMaximum": 7, "minLength": 2, "pattern": "^[a-c]+\\d?$"}"#,
        r#"{"type": "array", "items": {"enum": ["a", 1, null, true]}, "minItems": 1}"#,
        r#"{"properties": {"a": {"const": "x"}, "b": {"type": "boolean"}}, "additionalProperties": {"type": "number", "maximum": 5}, "maxProperties": 3}"#,
        r#"{"type": "object", "required": ["k"], "properties": {"k": {"type": "string", "maxLength": 2}}}"#,
        "true",
    ];

    /// A JSON text, sometimes not quite JSON.
    fn event() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            prop_oneof![
                Just("0"),
                Just("-0"),
                Just("1"),
                Just("7"),
                Just("-3"),
                Just("-4"),
                Just("5"),
                Just("6"),
                Just("1.0"),
                Just("2.5"),
                Just("1e2"),
                Just("01"),
                Just("-"),
                Just("9223372036854775808"),
                Just("-9223372036854775808"),
                Just("1."),
            ]
            .prop_map(str::to_string),
            prop_oneof![
                Just(r#""a""#),
                Just(r#""ab""#),
                Just(r#""abc1""#),
                Just(r#""x""#),
                Just(r#""o-12""#),
                Just(r#""o-""#),
                Just(r#""new""#),
                Just(r#""paid""#),
                Just(r#""\u0061""#),
                Just(r#""a\nb""#),
                Just(r#""\ud800""#),
                Just(r#""é""#),
                Just(r#""ab\"""#),
                Just("\"a\tb\""),
                Just(r#""abcdefghij""#),
                Just(r#""""#),
            ]
            .prop_map(str::to_string),
        ];
        let key = prop_oneof![
            Just("id"),
            Just("qty"),
            Just("customer"),
            Just("state"),
            Just("note"),
            Just("lines"),
            Just("a"),
            Just("b"),
            Just("k"),
            Just("z"),
            Just("\\u0061"),
        ];
        let value = leaf.clone().prop_recursive(4, 24, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((key.clone(), inner), 0..6).prop_map(|v| {
                    let fields: Vec<String> = v
                        .into_iter()
                        .map(|(k, v)| format!("\"{k}\" : {v}"))
                        .collect();
                    format!("{{ {} }}", fields.join(","))
                }),
            ]
        });
        // Objects shaped like ORDER's events, so that its plan has work.
        let order = (
            prop_oneof![Just(r#""o-12""#), Just(r#""o-1""#), Just(r#""o-""#)],
            leaf.clone(),
            proptest::collection::vec(
                (
                    prop_oneof![Just("customer"), Just("state"), Just("note"), Just("qty")],
                    leaf,
                ),
                0..3,
            ),
        )
            .prop_map(|(id, qty, more)| {
                let more: String = more.iter().map(|(k, v)| format!(r#","{k}":{v}"#)).collect();
                format!(r#"{{"id":{id},"qty":{qty}{more}}}"#)
            });
        let text = prop_oneof![value, order];
        (text, 0usize..4, any::<usize>()).prop_map(|(text, mutation, at)| {
            let at = at % (text.len() + 1);
            let at = (0..=at)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            match mutation {
                0 => text[..at].to_string(),
                1 => format!("{}{}{}", &text[..at], ",", &text[at..]),
                _ => text,
            }
        })
    }

    /// The module's invariant: what the fast path accepts, jsonschema
    /// accepts; over generated events, a share of which each schema's plan
    /// accepts (so that the comparison is not empty).
    #[test]
    fn never_looser_than_jsonschema() {
        use proptest::strategy::{Strategy, ValueTree};
        let schemas: Vec<crate::Parsed> = SCHEMAS
            .iter()
            .map(|s| crate::Parsed::parse(crate::Format::Json, s).unwrap())
            .collect();
        let mut accepted = vec![0; schemas.len()];
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let strategy = event();
        for _ in 0..20_000 {
            let text = strategy.new_tree(&mut runner).unwrap().current();
            for (i, parsed) in schemas.iter().enumerate() {
                let compiled = parsed.fast_path_check(text.as_bytes());
                assert_eq!(compiled, Ok(true), "{} on {text}", SCHEMAS[i]);
                let plan = Plan::compile(&serde_json::from_str(SCHEMAS[i]).unwrap()).unwrap();
                accepted[i] += usize::from(plan.accepts(text.as_bytes()));
            }
        }
        assert!(
            accepted.iter().all(|&n| n >= 10),
            "accepted per schema: {accepted:?}"
        );
        eprintln!("accepted per schema: {accepted:?}");
    }
}
