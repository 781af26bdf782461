//! Avro binary datums checked against their schema without decoding them
//! into values. A datum's lengths and counts come from its own bytes, and
//! Avro lets four bytes claim a million items of a type that takes no
//! bytes (an array of nulls): decoding such an event into values is a
//! memory amplifier (the fuzz target `schema_check` found apache-avro's
//! decoder reserving gigabytes for one). This walks the bytes, allocates
//! nothing per item, and bounds its work by the event's size.

use std::collections::HashMap;

use apache_avro::Schema;
use apache_avro::schema::{Name, Namespace};

/// Nested values deeper than this are refused (a recursive schema costs a
/// byte per level, so an event could otherwise nest a million deep).
const MAX_DEPTH: u32 = 256;

/// The named types of a schema, by full name, to resolve its references.
pub(crate) type Names = HashMap<Name, Schema>;

/// Every named type of `schema` (records, enums, fixed), by full name.
pub(crate) fn names(schema: &Schema) -> Names {
    let mut out = Names::new();
    collect(schema, &None, &mut out, 0);
    out
}

fn collect(schema: &Schema, ns: &Namespace, out: &mut Names, depth: u32) {
    if depth > MAX_DEPTH {
        return;
    }
    match schema {
        Schema::Record(r) => {
            let full = r.name.fully_qualified_name(ns);
            if out.contains_key(&full) {
                return;
            }
            let inner = full.namespace.clone();
            out.insert(full, schema.clone());
            for f in &r.fields {
                collect(&f.schema, &inner, out, depth + 1);
            }
        }
        Schema::Enum(e) => {
            out.insert(e.name.fully_qualified_name(ns), schema.clone());
        }
        Schema::Fixed(f) => {
            out.insert(f.name.fully_qualified_name(ns), schema.clone());
        }
        Schema::Array(a) => collect(&a.items, ns, out, depth + 1),
        Schema::Map(m) => collect(&m.types, ns, out, depth + 1),
        Schema::Union(u) => {
            for v in u.variants() {
                collect(v, ns, out, depth + 1);
            }
        }
        Schema::Decimal(d) => collect(&d.inner, ns, out, depth + 1),
        _ => {}
    }
}

/// Checks that `bytes` is exactly one datum of `schema`.
pub(crate) fn check(schema: &Schema, names: &Names, bytes: &[u8]) -> Result<(), String> {
    let mut walker = Walker {
        bytes,
        pos: 0,
        names,
        // Each step reads a value; an item of a zero-size type reads no
        // byte, so allow a few per byte and some slack for small events.
        steps_left: bytes.len().saturating_mul(8).saturating_add(1 << 16),
    };
    walker.value(schema, &None, 0)?;
    if walker.pos != bytes.len() {
        return Err(format!(
            "{} byte(s) left after the datum",
            bytes.len() - walker.pos
        ));
    }
    Ok(())
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    names: &'a Names,
    steps_left: usize,
}

impl Walker<'_> {
    fn at(&self) -> String {
        format!("at byte {}", self.pos)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("{}: {n} byte(s) claimed, fewer left", self.at()))?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    /// A zigzag varint of at most 10 bytes.
    fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let Some(&b) = self.bytes.get(self.pos) else {
                return Err(format!("{}: the datum ends inside a number", self.at()));
            };
            self.pos += 1;
            if shift == 63 && b > 1 {
                return Err(format!("{}: a number longer than 64 bits", self.at()));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err(format!("{}: a number longer than 10 bytes", self.at()))
    }

    fn int(&mut self) -> Result<i32, String> {
        let v = self.long()?;
        i32::try_from(v).map_err(|_| format!("{}: {v} is out of range for an int", self.at()))
    }

    fn length(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        usize::try_from(n).map_err(|_| format!("{}: a negative length {n}", self.at()))
    }

    fn value(&mut self, schema: &Schema, ns: &Namespace, depth: u32) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.steps_left = self.steps_left.checked_sub(1).ok_or_else(|| {
            format!(
                "{}: more items than an event of this size can hold",
                self.at()
            )
        })?;
        match schema {
            Schema::Null => Ok(()),
            Schema::Boolean => {
                let at = self.at();
                match self.take(1)? {
                    [0 | 1] => Ok(()),
                    b => Err(format!("{at}: {b:?} is not a boolean")),
                }
            }
            Schema::Int | Schema::Date | Schema::TimeMillis => self.int().map(drop),
            Schema::Long
            | Schema::TimeMicros
            | Schema::TimestampMillis
            | Schema::TimestampMicros
            | Schema::TimestampNanos
            | Schema::LocalTimestampMillis
            | Schema::LocalTimestampMicros
            | Schema::LocalTimestampNanos => self.long().map(drop),
            Schema::Float => self.take(4).map(drop),
            Schema::Double => self.take(8).map(drop),
            Schema::Bytes | Schema::BigDecimal => {
                let n = self.length()?;
                self.take(n).map(drop)
            }
            Schema::String => {
                let n = self.length()?;
                let at = self.at();
                std::str::from_utf8(self.take(n)?)
                    .map(drop)
                    .map_err(|e| format!("{at}: a string that is not UTF-8: {e}"))
            }
            Schema::Uuid => {
                let n = self.length()?;
                let at = self.at();
                match self.take(n)? {
                    b if b.len() == 16 => Ok(()),
                    b if b.len() == 36
                        && b.iter().enumerate().all(|(i, c)| match i {
                            8 | 13 | 18 | 23 => *c == b'-',
                            _ => c.is_ascii_hexdigit(),
                        }) =>
                    {
                        Ok(())
                    }
                    _ => Err(format!("{at}: not a UUID")),
                }
            }
            Schema::Fixed(f) => self.take(f.size).map(drop),
            Schema::Duration => self.take(12).map(drop),
            Schema::Decimal(d) => self.value(&d.inner, ns, depth + 1),
            Schema::Enum(e) => {
                let i = self.int()?;
                if usize::try_from(i).is_ok_and(|i| i < e.symbols.len()) {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: symbol {i} of enum {} which has {}",
                        self.at(),
                        e.name,
                        e.symbols.len()
                    ))
                }
            }
            Schema::Union(u) => {
                let i = self.long()?;
                let branch = usize::try_from(i)
                    .ok()
                    .and_then(|i| u.variants().get(i))
                    .ok_or_else(|| {
                        format!(
                            "{}: branch {i} of a union of {}",
                            self.at(),
                            u.variants().len()
                        )
                    })?;
                self.value(branch, ns, depth + 1)
            }
            Schema::Record(r) => {
                let inner = r.name.fully_qualified_name(ns).namespace;
                for f in &r.fields {
                    self.value(&f.schema, &inner, depth + 1)
                        .map_err(|e| format!("field {}: {e}", f.name))?;
                }
                Ok(())
            }
            Schema::Array(a) => self.blocks(|w| w.value(&a.items, ns, depth + 1)),
            Schema::Map(m) => self.blocks(|w| {
                w.value(&Schema::String, ns, depth + 1)?;
                w.value(&m.types, ns, depth + 1)
            }),
            Schema::Ref { name } => {
                let full = name.fully_qualified_name(ns);
                let target = self
                    .names
                    .get(&full)
                    .or_else(|| self.names.get(name))
                    .ok_or_else(|| format!("the schema names an unknown type {full}"))?;
                self.value(target, &full.namespace, depth + 1)
            }
        }
    }

    /// Avro's blocks: a count, then that many items, until a count of 0; a
    /// negative count is followed by the block's size in bytes.
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                self.length()?;
            }
            for _ in 0..count.unsigned_abs() {
                item(self)?;
            }
        }
    }
}
