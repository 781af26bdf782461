//! Conservative compatibility checker for JSON Schema (draft-07 and draft 2020-12 style).
//!
//! `can_read(reader, writer)` lists every reason why a value that is valid under the
//! `writer` schema might be refused by the `reader` schema. An empty list means: every
//! value the writer accepts, the reader accepts too. The checker is *conservative*: when
//! it cannot prove that the reader accepts something, it reports an incompatibility. It
//! never reports "compatible" for a change it does not understand.
//! (BACKWARD = `can_read(new, old)`, FORWARD = `can_read(old, new)`, FULL = both.)
//!
//! # Where a problem is (the `path`)
//!
//! Paths point into the *data*, not into the schema: `#` is the whole value, `#/email` is
//! the property `email`, `#/lines/[]` is any item of the array `lines`, `#/tags/*` is any
//! property of `tags` that is not listed by name. Property names containing `/` or `~`
//! are escaped as in JSON pointers (`~1`, `~0`). Combinators (`anyOf`, `$ref`, ...) do not
//! add anything to the path, as they do not move into the data.
//!
//! # Rules
//!
//! General:
//! - A schema `true` or `{}` (or one with only annotations) accepts everything, so it can
//!   read anything. A schema `false` accepts nothing, so anything can read it. A writer
//!   `true`/`{}` can only be read by a reader that accepts everything.
//! - Annotations are ignored: `title`, `description`, `$schema`, `$id` (at the root),
//!   `$comment`, `default`, `examples`, `deprecated`, `readOnly`, `writeOnly`, `$anchor`,
//!   `$vocabulary`, `$defs`, `definitions`.
//! - Unknown keywords (anything not listed here) make the check refuse, unless both
//!   versions have the keyword with an identical value at the same place.
//! - Local `$ref`s (`#`, `#/$defs/X`, `#/definitions/X`, any JSON pointer) are followed,
//!   each in its own version's document; recursive schemas are supported. A `$ref` to
//!   another document is only accepted when both versions have the identical `$ref`.
//!   Nested `$id`, `$dynamicRef` and `$recursiveRef` are refused (the latter two unless both
//!   documents are identical).
//!
//! Types and values:
//! - `type`: every type the writer allows must be allowed by the reader; an `integer` is
//!   accepted where a `number` is. Widening (`integer` to `number`, adding `null`) is
//!   compatible for the reader; narrowing is refused. A writer without `type` (and
//!   without `enum`/`const`) may write any type, so the reader must not restrict types.
//! - `enum`/`const`: the reader's values must include every value the writer may write
//!   (a `const` counts as a one-value enum). Adding enum values is compatible for the
//!   reader, removing them is refused; a reader that has an enum where the writer has
//!   none is refused ("narrowed to an enum"). Writer enum values are checked against the
//!   reader's type, numeric bounds and lengths.
//! - Numbers: `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`
//!   of the reader must be guaranteed by the writer's (same or tighter) bounds; a bound
//!   the writer does not have is refused. The draft-04 boolean form of
//!   `exclusiveMinimum`/`exclusiveMaximum` is only accepted when identical.
//! - Strings: `minLength`/`maxLength` like bounds; `pattern` of the reader must be absent
//!   or identical in the writer.
//! - `format` of the reader must be absent or identical in the writer, on any type: also
//!   custom formats such as `int32`/`uint64` that schemars puts on integers, because the
//!   consuming program may enforce them (so `u32` to `u64` is refused both ways).
//!
//! Objects:
//! - A property required by the reader must be required by the writer ("added as
//!   required" / "made required" are refused). Dropping a requirement is compatible.
//! - A property in both versions is checked recursively.
//! - A property only the writer lists is checked against the reader's
//!   `additionalProperties`: refused if that is `false` ("removed under a closed content
//!   model"), checked recursively if it is a schema, fine if it is absent or `true`.
//! - A property only the reader lists: fine if the writer is closed
//!   (`additionalProperties: false`); checked against the writer's `additionalProperties`
//!   schema if there is one; if the writer is open, the reader's property schema must
//!   accept anything, else refused ("added to an open content model": the writer may have
//!   written any value under this name). This is what Confluent's registry does too.
//! - A closed reader cannot read an open writer (the writer may write extra properties).
//! - `minProperties`/`maxProperties` like bounds (the writer's `required` and closed
//!   property list count as bounds).
//! - `patternProperties` on either side: only accepted when identical (and then a
//!   property only the reader lists must accept anything, as the writer may have written
//!   it under a pattern).
//! - `propertyNames`, `dependentRequired`, `dependentSchemas`, `dependencies`: if the
//!   reader has one, the writer must have the identical one. If only the writer has one,
//!   it only narrows what the writer writes and is ignored.
//!
//! Arrays:
//! - `items` (single schema form) is checked recursively; `minItems`/`maxItems` like
//!   bounds; `uniqueItems: true` in the reader needs it in the writer.
//! - Tuple forms (`prefixItems`, draft-07 array-form `items`, `additionalItems`) are only
//!   accepted when identical in both versions. `contains`/`minContains`/`maxContains` in
//!   the reader need identical ones in the writer.
//!
//! Combinators:
//! - Writer `anyOf`/`oneOf`: each alternative must be readable (or the writer's other
//!   keywords alone must be readable). Writer `allOf`: fine if the reader can read at
//!   least one of its parts (or the writer's other keywords alone).
//! - Reader `anyOf`: the writer must be readable by at least one alternative; otherwise
//!   the reasons of the closest alternative are reported. Reader `oneOf`: the same, and
//!   the other alternatives must provably not match the written values (different types,
//!   different enum values, or different required/closed properties).
//! - Reader `allOf`: every part must read the writer.
//! - `anyOf`/`oneOf`/`allOf` identical in both versions are compatible.
//! - Reader `not`, `if`/`then`/`else`: the writer must have the identical keywords.
//!   Reader `unevaluatedProperties`/`unevaluatedItems`: refused unless the two schemas
//!   are identical at that place. These keywords only narrow what a writer writes, so
//!   when only the writer has them they are ignored.
//! - A `$ref` with sibling keywords: in the reader, the target and the siblings must
//!   both hold; in the writer, only the target is used (right for draft-07, where
//!   siblings are ignored, and safe for 2020-12).
//! - Checking is bounded: nesting deeper than 64 levels is refused ("too deep"), and so
//!   is a comparison needing more than 200000 steps ("too complex").

use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap, HashSet};

pub use crate::types::Incompatibility;

/// Every reason why an instance valid under `writer` might be invalid under `reader`
/// (empty: every instance `writer` accepts, `reader` accepts too). Conservative: when
/// the checker cannot prove acceptance, it reports an incompatibility, never the reverse.
pub fn can_read(reader: &Value, writer: &Value) -> Vec<Incompatibility> {
    let mut out = Vec::new();
    let mut ctx = Ctx {
        rroot: reader,
        wroot: writer,
        roots_equal: reader == writer,
        active: HashMap::new(),
        depth: 0,
        steps: 0,
    };
    if !View::new(reader).is_trivial() {
        if has_nested_id(reader, 0) {
            out.push(inc(
                "#",
                "this version uses a nested `$id`, which the checker does not support".into(),
            ));
        }
        if has_nested_id(writer, 0) {
            out.push(inc(
                "#",
                "the other version uses a nested `$id`, which the checker does not support".into(),
            ));
        }
    }
    if out.is_empty() {
        out = ctx.check(View::new(reader), View::new(writer), "#");
    }
    let mut seen = HashSet::new();
    out.retain(|i| seen.insert((i.path.clone(), i.reason.clone())));
    out
}

const MAX_DEPTH: usize = 64;
const MAX_WALK: usize = 512;
const MAX_STEPS: usize = 200_000;
static TRUE_SCHEMA: Value = Value::Bool(true);
static EMPTY_MAP: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$id",
    "$comment",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$defs",
    "definitions",
    "$anchor",
    "$vocabulary",
];

const KNOWN: &[&str] = &[
    "$ref",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "type",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "propertyNames",
    "unevaluatedProperties",
    "unevaluatedItems",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
];

// Type bits.
const T_NULL: u8 = 1;
const T_BOOL: u8 = 2;
const T_OBJ: u8 = 4;
const T_ARR: u8 = 8;
const T_NUM: u8 = 16;
const T_INT: u8 = 32;
const T_STR: u8 = 64;
const T_ALL: u8 = 127;
const TYPE_NAMES: &[(u8, &str)] = &[
    (T_NULL, "null"),
    (T_BOOL, "boolean"),
    (T_OBJ, "object"),
    (T_ARR, "array"),
    (T_NUM, "number"),
    (T_INT, "integer"),
    (T_STR, "string"),
];

// Keywords a view may hide (already handled by a caller).
const S_REF: u8 = 1;
const S_ALL: u8 = 2;
const S_ANY: u8 = 4;
const S_ONE: u8 = 8;

fn skip_bit(k: &str) -> u8 {
    match k {
        "$ref" => S_REF,
        "allOf" => S_ALL,
        "anyOf" => S_ANY,
        "oneOf" => S_ONE,
        _ => 0,
    }
}

fn inc(path: &str, reason: String) -> Incompatibility {
    Incompatibility {
        path: path.to_string(),
        reason,
    }
}

/// How a path is named in a reason.
fn subj(path: &str) -> String {
    match path.strip_prefix("#/") {
        Some(rest) => format!("`{rest}`"),
        None => "the value".to_string(),
    }
}

fn child(path: &str, name: &str) -> String {
    format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"))
}

/// A schema node with some combinator keywords hidden.
#[derive(Clone, Copy)]
struct View<'a> {
    node: &'a Value,
    skip: u8,
}

impl<'a> View<'a> {
    fn new(node: &'a Value) -> Self {
        View { node, skip: 0 }
    }
    fn hide(self, bit: u8) -> Self {
        View {
            node: self.node,
            skip: self.skip | bit,
        }
    }
    fn get(&self, k: &str) -> Option<&'a Value> {
        if skip_bit(k) & self.skip != 0 {
            return None;
        }
        self.node.as_object()?.get(k)
    }
    fn keys(&self) -> Vec<&'a str> {
        match self.node.as_object() {
            Some(m) => m
                .keys()
                .map(|k| k.as_str())
                .filter(|k| !ANNOTATIONS.contains(k) && skip_bit(k) & self.skip == 0)
                .collect(),
            None => Vec::new(),
        }
    }
    fn is_trivial(&self) -> bool {
        match self.node {
            Value::Bool(b) => *b,
            Value::Object(_) => self.keys().is_empty(),
            _ => false,
        }
    }
}

fn has_nested_id(v: &Value, depth: usize) -> bool {
    if depth > MAX_WALK {
        return true;
    }
    match v {
        Value::Object(m) => m.iter().any(|(k, x)| {
            (depth > 0 && k == "$id" && x.is_string()) || has_nested_id(x, depth + 1)
        }),
        Value::Array(a) => a.iter().any(|x| has_nested_id(x, depth + 1)),
        _ => false,
    }
}

fn is_local(r: &str) -> bool {
    r == "#" || r.starts_with("#/")
}

/// Resolve a local `$ref` (JSON pointer in a fragment) against `root`.
fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    if r == "#" {
        return Some(root);
    }
    let ptr = r.strip_prefix("#/")?;
    if ptr.contains('%') {
        return None;
    }
    let mut cur = root;
    for seg in ptr.split('/') {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        cur = match cur {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn num_eq(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return x == y;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

/// JSON Schema equality of instances (numbers compared by value).
fn json_eq(a: &Value, b: &Value, depth: usize) -> bool {
    if depth > MAX_WALK {
        return false;
    }
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => num_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q, depth + 1))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q, depth + 1)))
        }
        _ => a == b,
    }
}

fn is_integer_valued(n: &serde_json::Number) -> bool {
    n.is_i64()
        || n.is_u64()
        || n.as_f64()
            .is_some_and(|f| f.is_finite() && f.fract() == 0.0)
}

fn value_type(v: &Value) -> u8 {
    match v {
        Value::Null => T_NULL,
        Value::Bool(_) => T_BOOL,
        Value::Object(_) => T_OBJ,
        Value::Array(_) => T_ARR,
        Value::Number(n) if is_integer_valued(n) => T_INT,
        Value::Number(_) => T_NUM,
        Value::String(_) => T_STR,
    }
}

/// Does a reader type set accept values of the (single) type bit `t`?
fn type_accepts(rt: u8, t: u8) -> bool {
    if t == T_INT {
        rt & (T_INT | T_NUM) != 0
    } else {
        rt & t != 0
    }
}

fn type_list(t: u8) -> String {
    let names: Vec<&str> = TYPE_NAMES
        .iter()
        .filter(|(b, _)| t & b != 0)
        .map(|(_, n)| *n)
        .collect();
    names.join(", ")
}

/// Parse a `type` keyword. `Err` = malformed.
fn parse_type(v: &Value) -> Result<u8, ()> {
    fn one(s: &str) -> Result<u8, ()> {
        TYPE_NAMES
            .iter()
            .find(|(_, n)| *n == s)
            .map(|(b, _)| *b)
            .ok_or(())
    }
    match v {
        Value::String(s) => one(s),
        Value::Array(a) => {
            let mut t = 0;
            for x in a {
                t |= one(x.as_str().ok_or(())?)?;
            }
            Ok(t)
        }
        _ => Err(()),
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn as_count(v: Option<&Value>) -> Result<Option<u64>, ()> {
    match v {
        None => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) => Ok(Some(n)),
            None => match x.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 1e18 => Ok(Some(f as u64)),
                _ => Err(()),
            },
        },
    }
}

fn as_num(v: Option<&Value>) -> Result<Option<f64>, ()> {
    match v {
        None => Ok(None),
        Some(x) => x.as_f64().map(Some).ok_or(()),
    }
}

fn is_multiple(a: f64, b: f64) -> bool {
    if b <= 0.0 || !a.is_finite() || !b.is_finite() {
        return false;
    }
    let q = a / b;
    q.is_finite() && (q - q.round()).abs() <= 1e-9 * q.abs().max(1.0)
}

fn str_set(v: Option<&Value>) -> Result<BTreeSet<&str>, ()> {
    match v {
        None => Ok(BTreeSet::new()),
        Some(Value::Array(a)) => a.iter().map(|x| x.as_str().ok_or(())).collect(),
        Some(_) => Err(()),
    }
}

struct Ctx<'a> {
    rroot: &'a Value,
    wroot: &'a Value,
    roots_equal: bool,
    active: HashMap<(usize, u8, usize, u8), String>,
    depth: usize,
    steps: usize,
}

type Out = Vec<Incompatibility>;

impl<'a> Ctx<'a> {
    /// Is the reader-side value `a` identical to the writer-side value `b`, including
    /// whatever their local `$ref`s point to?
    fn same(&self, a: &Value, b: &Value) -> bool {
        if a != b {
            return false;
        }
        if self.roots_equal {
            return true;
        }
        let mut stack = Vec::new();
        if !collect_refs(a, &mut stack, 0) {
            return false;
        }
        let mut seen: HashSet<String> = HashSet::new();
        while let Some(r) = stack.pop() {
            if !seen.insert(r.clone()) || !is_local(&r) {
                continue;
            }
            match (resolve(self.rroot, &r), resolve(self.wroot, &r)) {
                (Some(x), Some(y)) if x == y => {
                    if !collect_refs(x, &mut stack, 0) {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }

    fn check(&mut self, r: View<'a>, w: View<'a>, path: &str) -> Out {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return vec![inc(
                path,
                format!(
                    "{} is too complex to check (more than {MAX_STEPS} comparison steps)",
                    subj(path)
                ),
            )];
        }
        if self.depth >= MAX_DEPTH {
            return vec![inc(
                path,
                format!(
                    "{} is nested too deeply to check (more than {MAX_DEPTH} levels)",
                    subj(path)
                ),
            )];
        }
        if r.is_trivial() || w.node == &Value::Bool(false) {
            return vec![];
        }
        if !w.node.is_object() && !w.node.is_boolean() {
            return vec![inc(
                path,
                format!(
                    "the other version's schema for {} is not a valid schema",
                    subj(path)
                ),
            )];
        }
        if r.node == &Value::Bool(false) {
            return vec![inc(
                path,
                format!(
                    "{} is refused entirely by this version (schema `false`)",
                    subj(path)
                ),
            )];
        }
        if !r.node.is_object() {
            return vec![inc(
                path,
                format!(
                    "this version's schema for {} is not a valid schema",
                    subj(path)
                ),
            )];
        }
        let key = (
            r.node as *const Value as usize,
            r.skip,
            w.node as *const Value as usize,
            w.skip,
        );
        if let Some(p) = self.active.get(&key) {
            if p != path {
                // Coinductive hypothesis: already being checked for an enclosing value.
                return vec![];
            }
            return vec![inc(
                path,
                format!(
                    "{} is defined by a `$ref` cycle that never reaches any data",
                    subj(path)
                ),
            )];
        }
        self.active.insert(key, path.to_string());
        self.depth += 1;
        let out = self.check_inner(r, w, path);
        self.depth -= 1;
        self.active.remove(&key);
        out
    }

    fn check_inner(&mut self, r: View<'a>, w: View<'a>, path: &str) -> Out {
        // unevaluated*: only identical schemas.
        for kw in ["unevaluatedProperties", "unevaluatedItems"] {
            if r.get(kw).is_some() {
                if r.skip == 0 && w.skip == 0 && self.same(r.node, w.node) {
                    return vec![];
                }
                return vec![inc(
                    path,
                    format!(
                        "{}: `{kw}` is only accepted when both versions are identical here",
                        subj(path)
                    ),
                )];
            }
        }
        // Identical combinators on both sides are satisfied.
        let mut cancel = 0;
        for kw in ["allOf", "anyOf", "oneOf"] {
            if let (Some(a), Some(b)) = (r.get(kw), w.get(kw))
                && self.same(a, b)
            {
                cancel |= skip_bit(kw);
            }
        }
        if cancel != 0 {
            return self.check(r.hide(cancel), w.hide(cancel), path);
        }
        // Reader $ref: conjunction of target and siblings.
        if let Some(rf) = r.get("$ref") {
            let mut out = Vec::new();
            match rf.as_str() {
                None => out.push(inc(
                    path,
                    format!("this version has an invalid `$ref` at {}", subj(path)),
                )),
                Some(s) if is_local(s) => match resolve(self.rroot, s) {
                    Some(t) => out.extend(self.check(View::new(t), w, path)),
                    None => out.push(inc(
                        path,
                        format!(
                            "this version's `$ref` `{s}` at {} cannot be resolved",
                            subj(path)
                        ),
                    )),
                },
                Some(s) => {
                    if w.get("$ref").and_then(Value::as_str) != Some(s) {
                        out.push(inc(
                            path,
                            format!(
                                "{} refers to the external schema `{s}`, which the checker cannot see, and the other version does not use the same reference",
                                subj(path)
                            ),
                        ));
                    }
                }
            }
            out.extend(self.check(r.hide(S_REF), w, path));
            return out;
        }
        // Reader allOf: every part.
        if let Some(a) = r.get("allOf") {
            let mut out = Vec::new();
            match a.as_array() {
                Some(arr) => {
                    for b in arr {
                        out.extend(self.check(View::new(b), w, path));
                    }
                }
                None => out.push(inc(
                    path,
                    format!("this version has an invalid `allOf` at {}", subj(path)),
                )),
            }
            out.extend(self.check(r.hide(S_ALL), w, path));
            return out;
        }
        // Writer $ref: the writer writes at most what the target allows.
        if let Some(rf) = w.get("$ref") {
            return match rf.as_str() {
                Some(s) if is_local(s) => match resolve(self.wroot, s) {
                    Some(t) => self.check(r, View::new(t), path),
                    None => vec![inc(
                        path,
                        format!(
                            "the other version's `$ref` `{s}` at {} cannot be resolved",
                            subj(path)
                        ),
                    )],
                },
                Some(s) => {
                    if self.check(r, View::new(&TRUE_SCHEMA), path).is_empty() {
                        vec![]
                    } else {
                        vec![inc(
                            path,
                            format!(
                                "{} refers in the other version to the external schema `{s}`, which the checker cannot see",
                                subj(path)
                            ),
                        )]
                    }
                }
                None => vec![inc(
                    path,
                    format!("the other version has an invalid `$ref` at {}", subj(path)),
                )],
            };
        }
        // Writer anyOf / oneOf: every alternative must be readable.
        for kw in ["anyOf", "oneOf"] {
            if let Some(a) = w.get(kw) {
                let Some(arr) = a.as_array() else {
                    return vec![inc(
                        path,
                        format!("the other version has an invalid `{kw}` at {}", subj(path)),
                    )];
                };
                let rest = w.hide(skip_bit(kw));
                let mut rest_ok: Option<bool> = None;
                let mut out = Vec::new();
                for b in arr {
                    let e = self.check(r, View::new(b), path);
                    if e.is_empty() {
                        continue;
                    }
                    let ok = match rest_ok {
                        Some(x) => x,
                        None => {
                            let x = self.check(r, rest, path).is_empty();
                            rest_ok = Some(x);
                            x
                        }
                    };
                    if ok {
                        break;
                    }
                    out.extend(e);
                }
                return out;
            }
        }
        // Writer allOf: one readable part suffices.
        if let Some(a) = w.get("allOf") {
            let Some(arr) = a.as_array() else {
                return vec![inc(
                    path,
                    format!("the other version has an invalid `allOf` at {}", subj(path)),
                )];
            };
            let mut best: Option<Out> = None;
            let parts: Vec<View<'a>> = arr
                .iter()
                .map(View::new)
                .chain(std::iter::once(w.hide(S_ALL)))
                .collect();
            for p in parts {
                let e = self.check(r, p, path);
                if e.is_empty() {
                    return e;
                }
                if best.as_ref().is_none_or(|b| e.len() < b.len()) {
                    best = Some(e);
                }
            }
            return best.unwrap_or_default();
        }
        // Reader anyOf / oneOf: some alternative must read the writer.
        for kw in ["anyOf", "oneOf"] {
            if let Some(a) = r.get(kw) {
                let Some(arr) = a.as_array() else {
                    return vec![inc(
                        path,
                        format!("this version has an invalid `{kw}` at {}", subj(path)),
                    )];
                };
                let mut out = self.check(r.hide(skip_bit(kw)), w, path);
                let results: Vec<Out> = arr
                    .iter()
                    .map(|b| self.check(View::new(b), w, path))
                    .collect();
                match results.iter().position(|e| e.is_empty()) {
                    Some(i) => {
                        if kw == "oneOf"
                            && let Some(ri) = arr.get(i)
                        {
                            let (rr, wr) = (self.rroot, self.wroot);
                            for (j, rj) in arr.iter().enumerate() {
                                if j != i
                                    && !disjoint(w.node, wr, rj, rr, 0, &mut 10_000)
                                    && !disjoint(ri, rr, rj, rr, 0, &mut 10_000)
                                {
                                    out.push(inc(
                                        path,
                                        format!(
                                            "{} may match more than one `oneOf` alternative of this version (alternatives {} and {})",
                                            subj(path),
                                            i,
                                            j
                                        ),
                                    ));
                                    break;
                                }
                            }
                        }
                    }
                    None => {
                        // Closest: not provably disjoint from the writer, then fewest
                        // problems at this level, then fewest problems.
                        let (rr, wr) = (self.rroot, self.wroot);
                        let closest = results.into_iter().zip(arr).min_by_key(|(e, b)| {
                            (
                                disjoint(w.node, wr, b, rr, 0, &mut 10_000),
                                e.iter().filter(|x| x.path == path).count(),
                                e.len(),
                            )
                        });
                        match closest {
                            Some((c, _)) => out.extend(c),
                            None => out.push(inc(
                                path,
                                format!(
                                    "{} has an empty `{kw}` in this version, which accepts nothing",
                                    subj(path)
                                ),
                            )),
                        }
                    }
                }
                return out;
            }
        }
        self.flat(r, w, path)
    }

    /// Both sides without `$ref`/`allOf`/`anyOf`/`oneOf`.
    fn flat(&mut self, r: View<'a>, w: View<'a>, path: &str) -> Out {
        let mut out = Vec::new();
        let s = subj(path);
        // Unknown keywords.
        let mut all: BTreeSet<&str> = r.keys().into_iter().collect();
        all.extend(w.keys());
        for k in all {
            if KNOWN.contains(&k) {
                continue;
            }
            let ok = match (r.get(k), w.get(k)) {
                (Some(a), Some(b)) => {
                    self.same(a, b)
                        && (self.roots_equal
                            || !matches!(
                                k,
                                "$dynamicRef"
                                    | "$recursiveRef"
                                    | "$dynamicAnchor"
                                    | "$recursiveAnchor"
                            ))
                }
                _ => false,
            };
            if !ok {
                out.push(inc(
                    path,
                    format!("{s}: keyword `{k}` is not understood by the checker and is not identical in both versions"),
                ));
            }
        }
        // Constraint-only keywords: reader's must be identical in the writer.
        self.same_group(&mut out, r, w, path, &["not"]);
        self.same_group(&mut out, r, w, path, &["if", "then", "else"]);

        // Types.
        let wt_decl = match w.get("type").map(parse_type) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(())) => {
                out.push(inc(
                    path,
                    format!("{s}: the other version has an invalid `type`"),
                ));
                return out;
            }
        };
        let rt = match r.get("type").map(parse_type) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(())) => {
                out.push(inc(
                    path,
                    format!("{s}: this version has an invalid `type`"),
                ));
                return out;
            }
        };
        // Writer values (enum/const), filtered by the writer's own type.
        let w_vals: Option<Vec<&Value>> = if let Some(c) = w.get("const") {
            Some(vec![c])
        } else if let Some(e) = w.get("enum") {
            match e.as_array() {
                Some(a) => Some(a.iter().collect()),
                None => {
                    out.push(inc(
                        path,
                        format!("{s}: the other version has an invalid `enum`"),
                    ));
                    return out;
                }
            }
        } else {
            None
        };
        let w_vals = w_vals.map(|vs| {
            vs.into_iter()
                .filter(|v| wt_decl.is_none_or(|t| type_accepts(t, value_type(v))))
                .collect::<Vec<_>>()
        });
        let wt = match &w_vals {
            Some(vs) => {
                if vs.is_empty() {
                    return out; // the writer accepts nothing
                }
                Some(vs.iter().fold(0, |t, v| t | value_type(v)))
            }
            None => wt_decl,
        };
        if wt == Some(0) {
            return out;
        }
        match (rt, wt) {
            (Some(rt), None) => out.push(inc(
                path,
                format!(
                    "{s}: this version accepts only type {}, but the other version allows any type",
                    type_list(rt)
                ),
            )),
            (Some(rt), Some(wt)) => {
                for (b, name) in TYPE_NAMES {
                    if wt & b != 0 && !type_accepts(rt, *b) {
                        out.push(inc(
                            path,
                            format!(
                                "{s}: values of type {name} allowed by the other version are refused here (accepted: {})",
                                type_list(rt)
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        // enum / const.
        for kw in ["const", "enum"] {
            let Some(rv) = r.get(kw) else { continue };
            let allowed: Vec<&Value> = if kw == "const" {
                vec![rv]
            } else {
                match rv.as_array() {
                    Some(a) => a.iter().collect(),
                    None => {
                        out.push(inc(
                            path,
                            format!("{s}: this version has an invalid `enum`"),
                        ));
                        continue;
                    }
                }
            };
            match &w_vals {
                None => out.push(inc(
                    path,
                    format!(
                        "{s} was narrowed to an enum: the other version may write values outside {}",
                        short(rv)
                    ),
                )),
                Some(vs) => {
                    for v in vs {
                        if !allowed.iter().any(|a| json_eq(a, v, 0)) {
                            out.push(inc(
                                path,
                                format!("{s}: value {} allowed by the other version is not accepted here", short(v)),
                            ));
                        }
                    }
                }
            }
        }
        // `format` (also custom ones such as `uint32` on integers): only identical.
        if let Some(f) = r.get("format")
            && w.get("format") != Some(f)
        {
            out.push(inc(
                path,
                format!("{s}: `format: {}` here is not guaranteed by the other version (only an identical `format` is accepted)", short(f)),
            ));
        }
        let wt_eff = wt.unwrap_or(T_ALL);
        if wt_eff & (T_NUM | T_INT) != 0 {
            self.numbers(&mut out, r, w, path, &w_vals, wt_eff);
        }
        if wt_eff & T_STR != 0 {
            self.strings(&mut out, r, w, path, &w_vals);
        }
        if wt_eff & T_ARR != 0 {
            self.arrays(&mut out, r, w, path);
        }
        if wt_eff & T_OBJ != 0 {
            self.objects(&mut out, r, w, path);
        }
        out
    }

    fn same_group(&self, out: &mut Out, r: View<'a>, w: View<'a>, path: &str, kws: &[&str]) {
        if !kws.iter().any(|k| r.get(k).is_some()) {
            return;
        }
        let ok = kws.iter().all(|k| match (r.get(k), w.get(k)) {
            (None, None) => true,
            (Some(a), Some(b)) => self.same(a, b),
            _ => false,
        });
        if !ok {
            let names: Vec<String> = kws.iter().map(|k| format!("`{k}`")).collect();
            out.push(inc(
                path,
                format!(
                    "{}: {} of this version is only accepted when the other version has it identical",
                    subj(path),
                    names.join("/")
                ),
            ));
        }
    }

    fn numbers(
        &self,
        out: &mut Out,
        r: View<'a>,
        w: View<'a>,
        path: &str,
        w_vals: &Option<Vec<&Value>>,
        wt: u8,
    ) {
        let s = subj(path);
        let bool_form = ["exclusiveMinimum", "exclusiveMaximum"].iter().any(|k| {
            r.get(k).is_some_and(Value::is_boolean) || w.get(k).is_some_and(Value::is_boolean)
        });
        if bool_form {
            let keys = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"];
            let ok = keys.iter().all(|k| match (r.get(k), w.get(k)) {
                (None, None) => true,
                (Some(a), Some(b)) => self.same(a, b),
                _ => false,
            });
            if !ok {
                out.push(inc(
                    path,
                    format!("{s}: draft-04 boolean `exclusiveMinimum`/`exclusiveMaximum` bounds are only accepted when identical"),
                ));
            }
        }
        let parse = |v: View<'a>, k: &str| as_num(v.get(k));
        let (Ok(rmin), Ok(rmax), Ok(rmul), Ok(wmin), Ok(wmax), Ok(wmul)) = (
            parse(r, "minimum"),
            parse(r, "maximum"),
            parse(r, "multipleOf"),
            parse(w, "minimum"),
            parse(w, "maximum"),
            parse(w, "multipleOf"),
        ) else {
            out.push(inc(path, format!("{s}: a numeric bound is not a number")));
            return;
        };
        let (rxmin, rxmax, wxmin, wxmax) = if bool_form {
            (None, None, None, None)
        } else {
            match (
                parse(r, "exclusiveMinimum"),
                parse(r, "exclusiveMaximum"),
                parse(w, "exclusiveMinimum"),
                parse(w, "exclusiveMaximum"),
            ) {
                (Ok(a), Ok(b), Ok(c), Ok(d)) => (a, b, c, d),
                _ => {
                    out.push(inc(path, format!("{s}: a numeric bound is not a number")));
                    return;
                }
            }
        };
        let (rmin, rmax) = if bool_form {
            (None, None)
        } else {
            (rmin, rmax)
        };
        if let Some(vs) = w_vals {
            for v in vs {
                let Some(x) = v.as_f64() else { continue };
                let bad = rmin.is_some_and(|m| x < m)
                    || rxmin.is_some_and(|m| x <= m)
                    || rmax.is_some_and(|m| x > m)
                    || rxmax.is_some_and(|m| x >= m)
                    || rmul.is_some_and(|m| !is_multiple(x, m));
                if bad {
                    out.push(inc(
                        path,
                        format!("{s}: value {} allowed by the other version is outside this version's numeric bounds", short(v)),
                    ));
                }
            }
            return;
        }
        let desc = |a: Option<f64>, b: Option<f64>, an: &str, bn: &str| -> String {
            let mut parts = Vec::new();
            if let Some(x) = a {
                parts.push(format!("`{an}: {x}`"));
            }
            if let Some(x) = b {
                parts.push(format!("`{bn}: {x}`"));
            }
            if parts.is_empty() {
                "no such bound".to_string()
            } else {
                parts.join(" and ")
            }
        };
        let lower = desc(wmin, wxmin, "minimum", "exclusiveMinimum");
        let upper = desc(wmax, wxmax, "maximum", "exclusiveMaximum");
        if let Some(m) = rmin
            && !(wmin.is_some_and(|x| x >= m) || wxmin.is_some_and(|x| x >= m))
        {
            out.push(inc(path, format!("{s}: `minimum: {m}` here is not guaranteed by the other version (it has {lower})")));
        }
        if let Some(m) = rxmin
            && !(wmin.is_some_and(|x| x > m) || wxmin.is_some_and(|x| x >= m))
        {
            out.push(inc(path, format!("{s}: `exclusiveMinimum: {m}` here is not guaranteed by the other version (it has {lower})")));
        }
        if let Some(m) = rmax
            && !(wmax.is_some_and(|x| x <= m) || wxmax.is_some_and(|x| x <= m))
        {
            out.push(inc(path, format!("{s}: `maximum: {m}` here is not guaranteed by the other version (it has {upper})")));
        }
        if let Some(m) = rxmax
            && !(wmax.is_some_and(|x| x < m) || wxmax.is_some_and(|x| x <= m))
        {
            out.push(inc(path, format!("{s}: `exclusiveMaximum: {m}` here is not guaranteed by the other version (it has {upper})")));
        }
        if let Some(m) = rmul {
            let int_only = wt & T_NUM == 0;
            let ok = wmul.is_some_and(|x| is_multiple(x, m)) || (int_only && is_multiple(1.0, m));
            if !ok {
                out.push(inc(
                    path,
                    format!("{s}: `multipleOf: {m}` here is not guaranteed by the other version"),
                ));
            }
        }
    }

    fn strings(
        &self,
        out: &mut Out,
        r: View<'a>,
        w: View<'a>,
        path: &str,
        w_vals: &Option<Vec<&Value>>,
    ) {
        let s = subj(path);
        let counts = w_vals.as_ref().map(|vs| {
            vs.iter()
                .filter_map(|v| v.as_str())
                .map(|x| x.chars().count() as u64)
                .collect::<Vec<_>>()
        });
        count_bounds(
            out,
            r,
            w,
            path,
            "minLength",
            "maxLength",
            counts,
            None,
            None,
            "string length",
        );
        for kw in ["pattern"] {
            if let Some(p) = r.get(kw)
                && w.get(kw) != Some(p)
            {
                out.push(inc(
                    path,
                    format!("{s}: `{kw}: {}` here is not guaranteed by the other version (only an identical `{kw}` is accepted)", short(p)),
                ));
            }
        }
    }

    fn arrays(&mut self, out: &mut Out, r: View<'a>, w: View<'a>, path: &str) {
        let s = subj(path);
        let tuple = |v: View<'a>| {
            v.get("prefixItems").is_some()
                || v.get("additionalItems").is_some()
                || v.get("items").is_some_and(Value::is_array)
        };
        if tuple(r) || tuple(w) {
            let ok = ["prefixItems", "items", "additionalItems"].iter().all(|k| {
                match (r.get(k), w.get(k)) {
                    (None, None) => true,
                    (Some(a), Some(b)) => self.same(a, b),
                    _ => false,
                }
            });
            if !ok {
                out.push(inc(
                    path,
                    format!("{s}: tuple-style `prefixItems`/array `items`/`additionalItems` are only accepted when identical in both versions"),
                ));
            }
        } else {
            let ri = r.get("items").unwrap_or(&TRUE_SCHEMA);
            let wi = w.get("items").unwrap_or(&TRUE_SCHEMA);
            let p = format!("{path}/[]");
            out.extend(self.check(View::new(ri), View::new(wi), &p));
        }
        count_bounds(
            out,
            r,
            w,
            path,
            "minItems",
            "maxItems",
            None,
            None,
            None,
            "number of items",
        );
        if r.get("uniqueItems") == Some(&Value::Bool(true))
            && w.get("uniqueItems") != Some(&Value::Bool(true))
        {
            out.push(inc(
                path,
                format!("{s}: this version requires unique items, the other version does not"),
            ));
        }
        self.same_group(out, r, w, path, &["contains", "minContains", "maxContains"]);
    }

    fn objects(&mut self, out: &mut Out, r: View<'a>, w: View<'a>, path: &str) {
        let s = subj(path);
        let rpp = r.get("patternProperties");
        let wpp = w.get("patternProperties");
        if (rpp.is_some() || wpp.is_some())
            && !matches!((rpp, wpp), (Some(a), Some(b)) if self.same(a, b))
        {
            out.push(inc(
                path,
                format!(
                    "{s}: `patternProperties` are only accepted when identical in both versions"
                ),
            ));
        }
        for g in [
            "propertyNames",
            "dependentRequired",
            "dependentSchemas",
            "dependencies",
        ] {
            self.same_group(out, r, w, path, &[g]);
        }
        let empty: &'a Map<String, Value> = &EMPTY_MAP;
        let (Some(rprops), Some(wprops)) = (
            r.get("properties").map_or(Some(empty), Value::as_object),
            w.get("properties").map_or(Some(empty), Value::as_object),
        ) else {
            out.push(inc(path, format!("{s}: `properties` is not an object")));
            return;
        };
        let (Ok(rreq), Ok(wreq)) = (str_set(r.get("required")), str_set(w.get("required"))) else {
            out.push(inc(path, format!("{s}: `required` is not a list of names")));
            return;
        };
        let radd = r.get("additionalProperties").unwrap_or(&TRUE_SCHEMA);
        let wadd_decl = w.get("additionalProperties").unwrap_or(&TRUE_SCHEMA);
        // With writer patternProperties, any name may be written by the writer.
        let wadd = if wpp.is_some() {
            &TRUE_SCHEMA
        } else {
            wadd_decl
        };
        let w_closed = wadd == &Value::Bool(false);
        // Names the writer may write beyond its listed properties, ignoring names that
        // match identical `patternProperties` (validated the same way on both sides).
        let pp_same = matches!((rpp, wpp), (Some(a), Some(b)) if self.same(a, b));
        let w_extra_closed = wadd_decl == &Value::Bool(false) && (wpp.is_none() || pp_same);
        for p in &rreq {
            if !wreq.contains(p) {
                let cp = child(path, p);
                let reason = if wprops.contains_key(*p) {
                    format!(
                        "property `{p}` was made required: values written with the other version may omit it"
                    )
                } else {
                    format!(
                        "property `{p}` was added as required: values written with the other version may lack it"
                    )
                };
                out.push(inc(&cp, reason));
            }
        }
        for (name, wp) in wprops {
            let cp = child(path, name);
            match rprops.get(name) {
                Some(rp) => out.extend(self.check(View::new(rp), View::new(wp), &cp)),
                None => {
                    if radd == &Value::Bool(false) {
                        if wp != &Value::Bool(false) {
                            out.push(inc(
                                &cp,
                                format!("property `{name}` was removed under a closed content model: values written with the other version may contain it"),
                            ));
                        }
                    } else if radd.is_object() {
                        out.extend(self.check(View::new(radd), View::new(wp), &cp));
                    }
                }
            }
        }
        for (name, rp) in rprops {
            if wprops.contains_key(name) || w_closed {
                continue;
            }
            let cp = child(path, name);
            if wadd.is_object() {
                out.extend(self.check(View::new(rp), View::new(wadd), &cp));
            } else if !self
                .check(View::new(rp), View::new(&TRUE_SCHEMA), &cp)
                .is_empty()
            {
                out.push(inc(
                    &cp,
                    format!("property `{name}` was added to an open content model: the other version may have written any value under this name"),
                ));
            }
        }
        if !w_extra_closed {
            if radd == &Value::Bool(false) {
                out.push(inc(
                    path,
                    format!("{s}: this version refuses properties it does not list, but the other version allows extra properties"),
                ));
            } else if radd.is_object() {
                let cp = format!("{path}/*");
                out.extend(self.check(View::new(radd), View::new(wadd), &cp));
            }
        }
        let w_min = Some(wreq.len() as u64);
        let w_max = if wadd_decl == &Value::Bool(false) && wpp.is_none() {
            Some(wprops.len() as u64)
        } else {
            None
        };
        count_bounds(
            out,
            r,
            w,
            path,
            "minProperties",
            "maxProperties",
            None,
            w_min,
            w_max,
            "number of properties",
        );
    }
}

/// Reader `kmin`/`kmax` must be guaranteed by the writer's bounds (or by the concrete
/// writer values' sizes in `counts`).
#[allow(clippy::too_many_arguments)]
fn count_bounds(
    out: &mut Out,
    r: View<'_>,
    w: View<'_>,
    path: &str,
    kmin: &str,
    kmax: &str,
    counts: Option<Vec<u64>>,
    extra_wmin: Option<u64>,
    extra_wmax: Option<u64>,
    what: &str,
) {
    let s = subj(path);
    let (Ok(rmin), Ok(rmax), Ok(wmin), Ok(wmax)) = (
        as_count(r.get(kmin)),
        as_count(r.get(kmax)),
        as_count(w.get(kmin)),
        as_count(w.get(kmax)),
    ) else {
        out.push(inc(
            path,
            format!("{s}: `{kmin}`/`{kmax}` is not a non-negative integer"),
        ));
        return;
    };
    let wmin = wmin.max(extra_wmin);
    let wmax = match (wmax, extra_wmax) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    if let Some(m) = rmin {
        let ok = match &counts {
            Some(c) => c.iter().all(|x| *x >= m),
            None => wmin.is_some_and(|x| x >= m),
        };
        if !ok && m > 0 {
            out.push(inc(
                path,
                format!("{s}: `{kmin}: {m}` here is not guaranteed by the other version (its {what} may be smaller)"),
            ));
        }
    }
    if let Some(m) = rmax {
        let ok = match &counts {
            Some(c) => c.iter().all(|x| *x <= m),
            None => wmax.is_some_and(|x| x <= m),
        };
        if !ok {
            out.push(inc(
                path,
                format!("{s}: `{kmax}: {m}` here is not guaranteed by the other version (its {what} may be larger)"),
            ));
        }
    }
}

/// Collect `$ref` strings; `false` when something makes the value unsafe to compare
/// textually (too deep, or a dynamic reference).
fn collect_refs(v: &Value, out: &mut Vec<String>, depth: usize) -> bool {
    if depth > MAX_WALK {
        return false;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$dynamicRef" || k == "$recursiveRef" {
                    return false;
                }
                if k == "$ref"
                    && let Some(s) = x.as_str()
                {
                    out.push(s.to_string());
                }
                if !collect_refs(x, out, depth + 1) {
                    return false;
                }
            }
            true
        }
        Value::Array(a) => a.iter().all(|x| collect_refs(x, out, depth + 1)),
        _ => true,
    }
}

/// Types a schema allows, from `type` and `enum`/`const` (`None`: unknown / any).
fn schema_types(m: &Map<String, Value>) -> Option<u8> {
    let mut t = match m.get("type") {
        Some(v) => parse_type(v).ok()?,
        None => T_ALL,
    };
    let vals: Option<Vec<&Value>> = match (m.get("const"), m.get("enum")) {
        (Some(c), _) => Some(vec![c]),
        (None, Some(Value::Array(a))) => Some(a.iter().collect()),
        _ => None,
    };
    if let Some(vs) = vals {
        t &= vs.iter().fold(0, |acc, v| acc | value_type(v));
    }
    Some(t)
}

fn values_of(m: &Map<String, Value>) -> Option<Vec<&Value>> {
    match (m.get("const"), m.get("enum")) {
        (Some(c), _) => Some(vec![c]),
        (None, Some(Value::Array(a))) => Some(a.iter().collect()),
        _ => None,
    }
}

fn types_overlap(a: u8, b: u8) -> bool {
    a & b != 0 || (a & T_INT != 0 && b & T_NUM != 0) || (b & T_INT != 0 && a & T_NUM != 0)
}

/// Can we prove that no instance is valid under both `a` (in document `ar`) and `b`
/// (in document `br`)? `false` when unsure.
fn disjoint(
    a: &Value,
    ar: &Value,
    b: &Value,
    br: &Value,
    depth: usize,
    budget: &mut usize,
) -> bool {
    *budget = budget.saturating_sub(1);
    if depth > 32 || *budget == 0 {
        return false;
    }
    if a == &Value::Bool(false) || b == &Value::Bool(false) {
        return true;
    }
    let (Some(ao), Some(bo)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    // An instance of a schema with `$ref` is an instance of the target (any draft).
    if let Some(s) = ao.get("$ref") {
        return s
            .as_str()
            .filter(|s| is_local(s))
            .and_then(|s| resolve(ar, s))
            .is_some_and(|t| disjoint(t, ar, b, br, depth + 1, budget));
    }
    if let Some(s) = bo.get("$ref") {
        return s
            .as_str()
            .filter(|s| is_local(s))
            .and_then(|s| resolve(br, s))
            .is_some_and(|t| disjoint(a, ar, t, br, depth + 1, budget));
    }
    for kw in ["anyOf", "oneOf"] {
        if let Some(Value::Array(arr)) = ao.get(kw)
            && arr
                .iter()
                .all(|x| disjoint(x, ar, b, br, depth + 1, budget))
        {
            return true;
        }
        if let Some(Value::Array(arr)) = bo.get(kw)
            && arr
                .iter()
                .all(|x| disjoint(a, ar, x, br, depth + 1, budget))
        {
            return true;
        }
    }
    if let Some(Value::Array(arr)) = ao.get("allOf")
        && arr
            .iter()
            .any(|x| disjoint(x, ar, b, br, depth + 1, budget))
    {
        return true;
    }
    if let Some(Value::Array(arr)) = bo.get("allOf")
        && arr
            .iter()
            .any(|x| disjoint(a, ar, x, br, depth + 1, budget))
    {
        return true;
    }
    let ta = schema_types(ao);
    let tb = schema_types(bo);
    if let (Some(x), Some(y)) = (ta, tb)
        && !types_overlap(x, y)
    {
        return true;
    }
    if let (Some(va), Some(vb)) = (values_of(ao), values_of(bo))
        && !va.iter().any(|x| vb.iter().any(|y| json_eq(x, y, 0)))
    {
        return true;
    }
    let only_obj = |t: Option<u8>| t.is_some_and(|t| t & !T_OBJ == 0);
    if only_obj(ta) || only_obj(tb) {
        return props_disjoint(ao, ar, bo, br, depth, budget)
            || props_disjoint(bo, br, ao, ar, depth, budget);
    }
    false
}

/// A property required by `a` that `b` forbids or constrains incompatibly.
fn props_disjoint(
    ao: &Map<String, Value>,
    ar: &Value,
    bo: &Map<String, Value>,
    br: &Value,
    depth: usize,
    budget: &mut usize,
) -> bool {
    let Ok(req) = str_set(ao.get("required")) else {
        return false;
    };
    let aprops = ao.get("properties").and_then(Value::as_object);
    let bprops = bo.get("properties").and_then(Value::as_object);
    let b_closed = bo.get("additionalProperties") == Some(&Value::Bool(false))
        && bo.get("patternProperties").is_none();
    req.iter().any(|p| {
        let bp = bprops.and_then(|m| m.get(*p));
        if bp.is_none() && b_closed {
            return true;
        }
        match (aprops.and_then(|m| m.get(*p)), bp) {
            (Some(x), Some(y)) => disjoint(x, ar, y, br, depth + 1, budget),
            _ => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Expected outcome in both directions, and a word every reason (of an
    /// incompatible direction) must mention in its path or reason.
    fn case(a: Value, b: Value, a_reads_b: bool, b_reads_a: bool, word: &str) {
        let ab = can_read(&a, &b);
        let ba = can_read(&b, &a);
        assert_eq!(
            ab.is_empty(),
            a_reads_b,
            "can_read(a, b) = {ab:#?}\na = {a}\nb = {b}"
        );
        assert_eq!(
            ba.is_empty(),
            b_reads_a,
            "can_read(b, a) = {ba:#?}\na = {a}\nb = {b}"
        );
        for i in ab.iter().chain(ba.iter()) {
            assert!(
                i.path.contains(word) || i.reason.contains(word),
                "reason does not name `{word}`: {i:?}"
            );
        }
        // A schema can always read itself.
        assert!(can_read(&a, &a).is_empty(), "{:#?}", can_read(&a, &a));
        assert!(can_read(&b, &b).is_empty(), "{:#?}", can_read(&b, &b));
    }

    fn obj(props: Value, required: Value) -> Value {
        json!({"type": "object", "properties": props, "required": required})
    }

    fn closed(props: Value, required: Value) -> Value {
        json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
    }

    #[test]
    fn add_optional_field_open() {
        // Open content model: the old writer may have written `email` with any value.
        let old = obj(json!({"name": {"type": "string"}}), json!(["name"]));
        let new = obj(
            json!({"name": {"type": "string"}, "email": {"type": "string"}}),
            json!(["name"]),
        );
        // backward = can_read(new, old) refused; forward = can_read(old, new) fine.
        case(new.clone(), old.clone(), false, true, "email");
        let r = can_read(&new, &old);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].path, "#/email");
        assert!(r[0].reason.contains("open content model"));
    }

    #[test]
    fn add_optional_field_closed() {
        let old = closed(json!({"name": {"type": "string"}}), json!(["name"]));
        let new = closed(
            json!({"name": {"type": "string"}, "email": {"type": "string"}}),
            json!(["name"]),
        );
        // backward fine, forward refused (old reader is closed).
        case(new.clone(), old.clone(), true, false, "email");
        assert!(
            can_read(&old, &new)[0]
                .reason
                .contains("closed content model")
        );
    }

    #[test]
    fn add_optional_field_accepting_anything() {
        let old = obj(json!({"name": {"type": "string"}}), json!([]));
        let new = obj(
            json!({"name": {"type": "string"}, "extra": {"description": "anything"}}),
            json!([]),
        );
        case(new, old, true, true, "extra");
    }

    #[test]
    fn add_required_field() {
        let old = closed(json!({"name": {"type": "string"}}), json!(["name"]));
        let new = closed(
            json!({"name": {"type": "string"}, "email": {"type": "string"}}),
            json!(["name", "email"]),
        );
        case(new.clone(), old.clone(), false, false, "email");
        let r = can_read(&new, &old);
        assert!(
            r.iter()
                .any(|i| i.path == "#/email" && i.reason.contains("added as required"))
        );
    }

    #[test]
    fn make_field_required() {
        let old = obj(json!({"email": {"type": "string"}}), json!([]));
        let new = obj(json!({"email": {"type": "string"}}), json!(["email"]));
        case(new.clone(), old.clone(), false, true, "email");
        assert!(can_read(&new, &old)[0].reason.contains("made required"));
    }

    #[test]
    fn remove_field_open() {
        let old = obj(
            json!({"name": {"type": "string"}, "age": {"type": "integer"}}),
            json!(["name"]),
        );
        let new = obj(json!({"name": {"type": "string"}}), json!(["name"]));
        // new reader is open: fine; old reader may see any `age` written by new: refused.
        case(new, old, true, false, "age");
    }

    #[test]
    fn remove_field_closed() {
        let old = closed(
            json!({"name": {"type": "string"}, "age": {"type": "integer"}}),
            json!(["name"]),
        );
        let new = closed(json!({"name": {"type": "string"}}), json!(["name"]));
        case(new.clone(), old.clone(), false, true, "age");
        assert!(
            can_read(&new, &old)[0]
                .reason
                .contains("removed under a closed content model")
        );
    }

    #[test]
    fn remove_required_field_open() {
        let old = obj(
            json!({"name": {"type": "string"}, "age": {"type": "integer"}}),
            json!(["name", "age"]),
        );
        let new = obj(json!({"name": {"type": "string"}}), json!(["name"]));
        case(new, old, true, false, "age");
    }

    #[test]
    fn widen_integer_to_number() {
        let old = obj(json!({"price": {"type": "integer"}}), json!([]));
        let new = obj(json!({"price": {"type": "number"}}), json!([]));
        case(new.clone(), old.clone(), true, false, "price");
        assert_eq!(can_read(&old, &new)[0].path, "#/price");
    }

    #[test]
    fn narrow_number_to_integer() {
        let old = json!({"type": "number"});
        let new = json!({"type": "integer"});
        case(new.clone(), old.clone(), false, true, "number");
        assert_eq!(can_read(&new, &old)[0].path, "#");
    }

    #[test]
    fn add_null_type() {
        let old = json!({"type": "string"});
        let new = json!({"type": ["string", "null"]});
        case(new, old, true, false, "null");
    }

    #[test]
    fn add_enum_value() {
        let old = obj(
            json!({"status": {"type": "string", "enum": ["a", "b"]}}),
            json!(["status"]),
        );
        let new = obj(
            json!({"status": {"type": "string", "enum": ["a", "b", "c"]}}),
            json!(["status"]),
        );
        case(new.clone(), old.clone(), true, false, "status");
        assert!(can_read(&old, &new)[0].reason.contains("\"c\""));
    }

    #[test]
    fn remove_enum_value() {
        let old = json!({"enum": ["a", "b", "c"]});
        let new = json!({"enum": ["a", "b"]});
        case(new.clone(), old.clone(), false, true, "\"c\"");
    }

    #[test]
    fn narrow_to_enum() {
        let old = obj(json!({"kind": {"type": "string"}}), json!([]));
        let new = obj(
            json!({"kind": {"type": "string", "enum": ["x"]}}),
            json!([]),
        );
        case(new.clone(), old.clone(), false, true, "kind");
        assert!(
            can_read(&new, &old)[0]
                .reason
                .contains("narrowed to an enum")
        );
    }

    #[test]
    fn const_against_type() {
        let a = json!({"type": "string", "maxLength": 3});
        let b = json!({"const": "abc"});
        case(a, b, true, false, "the value");
        let long = json!({"const": "abcd"});
        assert!(!can_read(&json!({"type": "string", "maxLength": 3}), &long).is_empty());
    }

    #[test]
    fn tighten_max_length() {
        let old = obj(
            json!({"code": {"type": "string", "maxLength": 10}}),
            json!([]),
        );
        let new = obj(
            json!({"code": {"type": "string", "maxLength": 5}}),
            json!([]),
        );
        case(new.clone(), old.clone(), false, true, "code");
        assert!(can_read(&new, &old)[0].reason.contains("maxLength"));
    }

    #[test]
    fn add_min_length() {
        let old = json!({"type": "string"});
        let new = json!({"type": "string", "minLength": 1});
        case(new, old, false, true, "minLength");
    }

    #[test]
    fn number_bounds() {
        let old = json!({"type": "integer", "minimum": 0, "maximum": 100});
        let new = json!({"type": "integer", "exclusiveMinimum": -1, "maximum": 1000});
        case(new, old, true, false, "imum");
    }

    #[test]
    fn multiple_of() {
        let a = json!({"type": "number", "multipleOf": 0.5});
        let b = json!({"type": "number", "multipleOf": 1.5});
        case(a, b, true, false, "multipleOf");
        assert!(can_read(&json!({"multipleOf": 0.5}), &json!({"type": "integer"})).is_empty());
    }

    #[test]
    fn pattern_and_format() {
        let a = json!({"type": "string", "pattern": "^a"});
        let b = json!({"type": "string", "pattern": "^b"});
        case(a, b, false, false, "pattern");
        let c = json!({"type": "string", "format": "email"});
        let d = json!({"type": "string"});
        case(c, d, false, true, "format");
    }

    fn schemars_order(line_extra: Value, note_type: Value) -> Value {
        let mut line = json!({
            "type": "object",
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "format": "uint32", "minimum": 0}},
            "required": ["sku", "qty"]
        });
        if let (Some(m), Some(extra)) = (
            line.get_mut("properties").and_then(Value::as_object_mut),
            line_extra.as_object(),
        ) {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Order",
            "type": "object",
            "properties": {
                "note": {"type": note_type},
                "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
                "shipping": {"anyOf": [{"$ref": "#/$defs/Line"}, {"type": "null"}]}
            },
            "required": ["lines"],
            "$defs": {"Line": line}
        })
    }

    #[test]
    fn schemars_struct_identical_and_option() {
        let a = schemars_order(json!({}), json!(["string", "null"]));
        let b = schemars_order(json!({}), json!("string"));
        // Option<String> -> String: refused one way (null), fine the other.
        case(a, b, true, false, "note");
    }

    #[test]
    fn schemars_nested_line_change() {
        let old = schemars_order(json!({}), json!(["string", "null"]));
        let new = schemars_order(
            json!({"qty": {"type": "number"}}),
            json!(["string", "null"]),
        );
        case(new.clone(), old.clone(), true, false, "qty");
        let r = can_read(&old, &new);
        assert!(r.iter().any(|i| i.path == "#/lines/[]/qty"), "{r:#?}");
        assert!(r.iter().any(|i| i.path == "#/shipping/qty"), "{r:#?}");
    }

    #[test]
    fn schemars_definitions_draft07() {
        let mk = |t: &str| {
            json!({
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"$ref": "#/definitions/It"}}},
                "definitions": {"It": {"type": "object", "properties": {"v": {"type": t}}, "required": ["v"]}}
            })
        };
        case(mk("number"), mk("integer"), true, false, "v");
    }

    fn tree(value_type: &str, via_root: bool) -> Value {
        let r = if via_root { "#" } else { "#/$defs/Node" };
        let node = json!({
            "type": "object",
            "properties": {"value": {"type": value_type}, "children": {"type": "array", "items": {"$ref": r}}},
            "required": ["value", "children"]
        });
        if via_root {
            node
        } else {
            json!({"$ref": "#/$defs/Node", "$defs": {"Node": node}})
        }
    }

    #[test]
    fn recursive_tree() {
        case(
            tree("number", false),
            tree("integer", false),
            true,
            false,
            "value",
        );
        case(
            tree("number", true),
            tree("integer", true),
            true,
            false,
            "value",
        );
        case(
            tree("number", true),
            tree("integer", false),
            true,
            false,
            "value",
        );
        let r = can_read(&tree("integer", true), &tree("number", false));
        assert!(r.iter().any(|i| i.path == "#/value"), "{r:#?}");
    }

    #[test]
    fn escaped_pointer() {
        let a = json!({"$ref": "#/$defs/a~1b~0c", "$defs": {"a/b~c": {"type": "number"}}});
        let b = json!({"type": "integer"});
        case(a, b, true, false, "number");
    }

    #[test]
    fn anyof_widening() {
        let old = json!({"anyOf": [{"type": "string"}, {"type": "integer"}]});
        let new = json!({"anyOf": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"}]});
        case(new, old, true, false, "boolean");
    }

    #[test]
    fn oneof_overlap() {
        let r = json!({"oneOf": [{"type": "number"}, {"type": "integer"}]});
        let w = json!({"type": "integer"});
        assert!(!can_read(&r, &w).is_empty());
        let r2 = json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
        assert!(can_read(&r2, &w).is_empty());
        case(r2, w, true, false, "string");
    }

    #[test]
    fn allof_reader_and_writer() {
        let a = json!({"allOf": [{"type": "object"}, {"required": ["id"]}]});
        let b = json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]});
        case(a, b, true, false, "id");
    }

    #[test]
    fn nested_object_path() {
        let old = obj(
            json!({"customer": obj(json!({"address": obj(json!({"zip": {"type": "string"}}), json!([]))}), json!([]))}),
            json!([]),
        );
        let new = obj(
            json!({"customer": obj(json!({"address": obj(json!({"zip": {"type": "integer"}}), json!([]))}), json!([]))}),
            json!([]),
        );
        case(new.clone(), old.clone(), false, false, "zip");
        assert_eq!(can_read(&new, &old)[0].path, "#/customer/address/zip");
    }

    #[test]
    fn boolean_schemas() {
        case(
            json!(true),
            json!({"type": "string"}),
            true,
            false,
            "the value",
        );
        case(
            json!({"type": "string"}),
            json!(false),
            true,
            false,
            "the value",
        );
        case(json!({}), json!(true), true, true, "-");
        case(
            json!({"type": "string"}),
            json!({}),
            false,
            true,
            "the value",
        );
    }

    #[test]
    fn closed_reader_open_writer() {
        let a = closed(json!({"a": {"type": "string"}}), json!([]));
        let b = obj(json!({"a": {"type": "string"}}), json!([]));
        case(a.clone(), b, false, true, "extra properties");
        let c = json!({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}});
        case(c, a, true, false, "extra properties");
    }

    #[test]
    fn additional_properties_schema_paths() {
        let a = json!({"type": "object", "additionalProperties": {"type": "integer"}});
        let b = json!({"type": "object", "additionalProperties": {"type": "number"}});
        case(a.clone(), b, false, true, "#/*");
    }

    #[test]
    fn unknown_keywords() {
        let a = json!({"type": "string", "x-custom": 1});
        let b = json!({"type": "string", "x-custom": 2});
        case(a.clone(), b, false, false, "x-custom");
        case(a, json!({"type": "string"}), false, false, "x-custom");
    }

    #[test]
    fn not_and_conditionals() {
        let a = json!({"type": "string", "not": {"const": "x"}});
        let b = json!({"type": "string"});
        case(a, b, false, true, "`not`");
        let c = json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}});
        let d = json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["c"]}});
        case(c, d, false, false, "`if`");
    }

    #[test]
    fn external_refs() {
        let a = json!({"$ref": "https://example.com/a.json"});
        let b = json!({"$ref": "https://example.com/b.json"});
        case(a.clone(), b, false, false, "example.com");
        case(a.clone(), a, true, true, "-");
    }

    #[test]
    fn tuple_items_equal_or_refuse() {
        let a = json!({"type": "array", "prefixItems": [{"type": "string"}]});
        let b = json!({"type": "array", "prefixItems": [{"type": "number"}]});
        case(a, b, false, false, "prefixItems");
        let c = json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true, "maxItems": 3});
        let d = json!({"type": "array", "items": {"type": "string"}});
        case(c, d, false, true, "items");
    }

    #[test]
    fn unguarded_cycle_and_depth() {
        let a = json!({"$ref": "#"});
        assert!(!can_read(&a, &json!({"type": "string"})).is_empty());
        let mut deep = json!({"type": "string"});
        for _ in 0..100 {
            deep = json!({"type": "object", "properties": {"x": deep}});
        }
        let mut deep2 = json!({"type": "integer"});
        for _ in 0..100 {
            deep2 = json!({"type": "object", "properties": {"x": deep2}});
        }
        let r = can_read(&deep, &deep2);
        assert!(r.iter().any(|i| i.reason.contains("too deep")), "{r:?}");
    }

    #[test]
    fn garbage_does_not_panic() {
        let junk = [
            json!(1),
            json!("x"),
            json!(null),
            json!([1, 2]),
            json!({"type": 5}),
            json!({"enum": 3}),
            json!({"minimum": "a"}),
            json!({"properties": 1, "required": "x"}),
            json!({"$ref": 7}),
            json!({"$ref": "#/nope/0"}),
            json!({"anyOf": {}}),
            json!({"allOf": [1]}),
            json!({"oneOf": []}),
            json!({"items": [1], "prefixItems": 2}),
            json!({"maxLength": -1}),
            json!({"$ref": "#/$defs/a%20b"}),
        ];
        for a in &junk {
            for b in &junk {
                let _ = can_read(a, b);
            }
            let _ = can_read(a, &json!({"type": "string"}));
            assert!(
                !can_read(&json!({"type": "string"}), a).is_empty()
                    || a == &json!({"anyOf": {}})
                    || a.is_object()
            );
        }
    }

    #[test]
    fn nullable_anyof_null_removed() {
        let a = json!({"anyOf": [{"$ref": "#/$defs/L"}, {"type": "null"}], "$defs": {"L": {"type": "string"}}});
        let b = json!({"$ref": "#/$defs/L", "$defs": {"L": {"type": "string"}}});
        case(a, b, true, false, "null");
    }

    #[test]
    fn min_max_properties() {
        let a = json!({"type": "object", "minProperties": 1});
        let b = json!({"type": "object", "properties": {"a": {}}, "required": ["a"]});
        assert!(can_read(&a, &b).is_empty());
        let c = json!({"type": "object", "minProperties": 2, "maxProperties": 3});
        case(a, c, true, false, "Properties");
        let closed3 = json!({"type": "object", "properties": {"a": {}, "b": {}}, "additionalProperties": false});
        assert!(can_read(&json!({"maxProperties": 2}), &closed3).is_empty());
    }

    #[test]
    fn pattern_properties_closed_reads_itself() {
        let a = json!({"type": "object", "patternProperties": {"^x-": {"type": "string"}}, "additionalProperties": false});
        let b = json!({"type": "object", "patternProperties": {"^y-": {"type": "string"}}, "additionalProperties": false});
        case(a.clone(), b, false, false, "");
        assert!(
            can_read(&a, &json!({"type": "object"}))
                .iter()
                .any(|i| i.reason.contains("patternProperties"))
        );
    }

    #[test]
    fn schemars_integer_format() {
        let a = json!({"type": "integer", "format": "uint32", "minimum": 0});
        let b = json!({"type": "integer", "format": "uint64", "minimum": 0});
        case(a, b, false, false, "format");
    }

    #[test]
    fn schemars_tagged_enum_oneof() {
        let v1 = json!({"oneOf": [
            {"type": "string", "enum": ["Idle"]},
            {"type": "object", "properties": {"Run": {"type": "integer"}}, "required": ["Run"], "additionalProperties": false}
        ]});
        let v2 = json!({"oneOf": [
            {"type": "string", "enum": ["Idle", "Stop"]},
            {"type": "object", "properties": {"Run": {"type": "integer"}}, "required": ["Run"], "additionalProperties": false},
            {"type": "object", "properties": {"Jump": {"type": "number"}}, "required": ["Jump"], "additionalProperties": false}
        ]});
        // adding a variant: new reads old, old cannot read new.
        case(v2.clone(), v1.clone(), true, false, "");
        let r = can_read(&v1, &v2);
        assert!(r.iter().any(|i| i.path == "#/Jump"), "{r:#?}");
        assert!(r.iter().any(|i| i.reason.contains("\"Stop\"")), "{r:#?}");
    }

    #[test]
    fn writer_anyof_with_sibling_type() {
        let w = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}},
                       "anyOf": [{"required": ["a"]}, {"required": ["b"]}]});
        let r = json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
        case(r, w, true, false, "required");
    }

    #[test]
    fn writer_only_not_is_ignored() {
        let a = json!({"type": "string"});
        let b = json!({"type": "string", "not": {"const": ""}});
        case(a, b, true, false, "`not`");
    }

    #[test]
    fn draft4_boolean_exclusive() {
        let a = json!({"type": "number", "minimum": 0, "exclusiveMinimum": true});
        let b = json!({"type": "number", "minimum": 0});
        case(a, b, false, false, "exclusiveMinimum");
    }

    #[test]
    fn wide_recursive_anyof_terminates() {
        let mk = |t: &str| {
            json!({"$defs": {"N": {"anyOf": [
                {"type": "object", "properties": {"a": {"$ref": "#/$defs/N"}, "b": {"$ref": "#/$defs/N"}, "c": {"$ref": "#/$defs/N"}}},
                {"type": "array", "items": {"$ref": "#/$defs/N"}},
                {"type": t}
            ]}}, "$ref": "#/$defs/N"})
        };
        case(mk("number"), mk("integer"), true, false, "integer");
    }
}
