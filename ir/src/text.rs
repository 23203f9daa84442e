//! The text form of a graph: a printer and a parser that round-trip. One item per line:
//!
//! ```text
//! graph {
//!   input %x: f32[batch,4]
//!   const %w: f32[4,2] = [0.5, -1.0, 2.0, 0.0, 1.5, 3.0, -2.0, 1.0]
//!   %y: f32[batch,2] = MatMul@17 "mm" (%x, %w)
//!   %z = Clip@17 "clip" {max=6.0, min=0.0} (%y)
//!   output %z
//! }
//! ```
//!
//! Values are `%name` (or `%"any text"`), an omitted optional input or output is `_`, a node
//! is `outputs = OpType@opset "node name" {attributes} (inputs)`, and value types (after
//! inference) follow a colon (`f32[?]`: shape not known statically). Attribute values: `3`, `2.5` (floats always carry a `.`, an
//! exponent, `inf` or `NaN`), `"text"`, lists `[1, 2]`, empty lists `ints[]`, `floats[]`,
//! `strings[]`, tensors `tensor f32[2] [1.0, 2.0]`.

use crate::attr::{Attr, Attrs};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{Dim, Graph, Input, Node, ValueId, ValueType};
use crate::op::{Op, OpKind};
use crate::tensor::{Data, Tensor};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

/// Prints `g`; constants with more than `elide_above` elements print as `...` (which the
/// parser refuses), `None` prints all data.
pub fn print(g: &Graph, elide_above: Option<usize>) -> String {
    let mut s = String::from("graph {\n");
    for input in &g.inputs {
        let dims: Vec<String> = input.dims.iter().map(fmt_dim).collect();
        let _ = writeln!(s, "  input {}: {}[{}]", value_ref(g, input.value), input.dtype, dims.join(","));
    }
    let mut consts: Vec<(&ValueId, &Arc<Tensor>)> = g.consts.iter().collect();
    consts.sort_by_key(|(id, _)| **id);
    for (id, t) in consts {
        let data = if elide_above.is_some_and(|n| t.numel() > n) { "...".to_string() } else { fmt_data(t) };
        let _ = writeln!(s, "  const {}: {} = {data}", value_ref(g, *id), ValueType::of(t));
    }
    for node in &g.nodes {
        let outs: Vec<String> = node
            .outputs
            .iter()
            .map(|o| match o {
                None => "_".to_string(),
                Some(v) => match &g.value(*v).ty {
                    Some(ty) => format!("{}: {ty}", value_ref(g, *v)),
                    None => value_ref(g, *v),
                },
            })
            .collect();
        let _ = write!(s, "  {} = {}@{} {}", outs.join(", "), node.op.kind.name(), node.op.version, quote(&node.name));
        if !node.op.attrs.0.is_empty() {
            let attrs: Vec<String> = node.op.attrs.0.iter().map(|(k, v)| format!("{k}={}", fmt_attr(v))).collect();
            let _ = write!(s, " {{{}}}", attrs.join(", "));
        }
        let ins: Vec<String> =
            node.inputs.iter().map(|i| i.map_or_else(|| "_".to_string(), |v| value_ref(g, v))).collect();
        let _ = writeln!(s, " ({})", ins.join(", "));
    }
    for &o in &g.outputs {
        let _ = writeln!(s, "  output {}", value_ref(g, o));
    }
    s.push_str("}\n");
    s
}

fn is_plain(name: &str) -> bool {
    !name.is_empty() && name != "_" && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.'))
}

fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn value_ref(g: &Graph, v: ValueId) -> String {
    let name = g.name(v);
    if is_plain(name) { format!("%{name}") } else { format!("%{}", quote(name)) }
}

fn fmt_dim(d: &Dim) -> String {
    match d {
        Dim::Fixed(n) => n.to_string(),
        Dim::Symbol(s) if is_plain(s) && !s.starts_with(|c: char| c.is_ascii_digit()) => s.clone(),
        Dim::Symbol(s) => quote(s),
    }
}

fn fmt_float(x: f64) -> String {
    fmt_debug_float(format!("{x:?}"))
}

/// A float's `Debug` text with a decimal point, so it parses back as a float.
fn fmt_debug_float(s: String) -> String {
    if s.contains(['.', 'e', 'N', 'n']) { s } else { format!("{s}.0") }
}

fn fmt_f32(x: f32) -> String {
    fmt_debug_float(format!("{x:?}"))
}

fn fmt_data(t: &Tensor) -> String {
    let items: Vec<String> = match t.data() {
        Data::F32(v) => v.iter().map(|&x| fmt_f32(x)).collect(),
        Data::F64(v) => v.iter().map(|&x| fmt_float(x)).collect(),
        Data::F16(v) => v.iter().map(|&x| fmt_f32(x.to_f32())).collect(),
        Data::BF16(v) => v.iter().map(|&x| fmt_f32(x.to_f32())).collect(),
        Data::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        other => crate::with_data!(other, v => v.iter().map(|x| format!("{x:?}")).collect()),
    };
    format!("[{}]", items.join(", "))
}

fn fmt_attr(a: &Attr) -> String {
    match a {
        Attr::Int(i) => i.to_string(),
        Attr::Float(f) => fmt_f32(*f),
        Attr::String(s) => quote(s),
        Attr::Ints(v) if v.is_empty() => "ints[]".into(),
        Attr::Floats(v) if v.is_empty() => "floats[]".into(),
        Attr::Strings(v) if v.is_empty() => "strings[]".into(),
        Attr::Ints(v) => format!("[{}]", v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")),
        Attr::Floats(v) => format!("[{}]", v.iter().map(|&f| fmt_f32(f)).collect::<Vec<_>>().join(", ")),
        Attr::Strings(v) => format!("[{}]", v.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ")),
        Attr::Tensor(t) => format!("tensor {} {}", ValueType::of(t), fmt_data(t)),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Value(String),
    Ident(String),
    Num(String),
    Str(String),
    Punct(char),
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    src: &'a str,
    line: usize,
}

impl Lexer<'_> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Parse { line: self.line, msg: msg.into() }
    }

    fn string(&mut self) -> Result<String> {
        let mut s = String::new();
        loop {
            match self.chars.next() {
                None | Some((_, '\n')) => return Err(self.err("unterminated string")),
                Some((_, '"')) => return Ok(s),
                Some((_, '\\')) => match self.chars.next() {
                    Some((_, 'n')) => s.push('\n'),
                    Some((_, c @ ('"' | '\\'))) => s.push(c),
                    _ => return Err(self.err("bad escape in string")),
                },
                Some((_, c)) => s.push(c),
            }
        }
    }

    fn word(&mut self, start: usize) -> &str {
        let mut end = start;
        while let Some(&(i, c)) = self.chars.peek() {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '+' | '-') {
                end = i + c.len_utf8();
                self.chars.next();
            } else {
                break;
            }
        }
        &self.src[start..end]
    }

    fn tokens(mut self) -> Result<Vec<(usize, Tok)>> {
        let mut out = Vec::new();
        while let Some(&(i, c)) = self.chars.peek() {
            match c {
                '\n' => {
                    self.line += 1;
                    self.chars.next();
                }
                c if c.is_whitespace() => {
                    self.chars.next();
                }
                '#' => {
                    while self.chars.peek().is_some_and(|&(_, c)| c != '\n') {
                        self.chars.next();
                    }
                }
                '%' => {
                    self.chars.next();
                    let name = if self.chars.peek().is_some_and(|&(_, c)| c == '"') {
                        self.chars.next();
                        self.string()?
                    } else {
                        let start = self.chars.peek().map_or(self.src.len(), |&(i, _)| i);
                        self.word(start).to_string()
                    };
                    if name.is_empty() {
                        return Err(self.err("'%' without a value name"));
                    }
                    out.push((self.line, Tok::Value(name)));
                }
                '"' => {
                    self.chars.next();
                    let s = self.string()?;
                    out.push((self.line, Tok::Str(s)));
                }
                '{' | '}' | '(' | ')' | '[' | ']' | ',' | '=' | ':' | '@' | '?' => {
                    self.chars.next();
                    out.push((self.line, Tok::Punct(c)));
                }
                c if c.is_ascii_digit() || c == '-' || c == '+' => {
                    let w = self.word(i).to_string();
                    out.push((self.line, Tok::Num(w)));
                }
                c if c.is_ascii_alphabetic() || c == '_' => {
                    let w = self.word(i).to_string();
                    out.push((self.line, Tok::Ident(w)));
                }
                c => return Err(self.err(format!("unexpected character '{c}'"))),
            }
        }
        Ok(out)
    }
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    g: Graph,
    names: HashMap<String, ValueId>,
}

/// Parses the text form. The result is verified.
pub fn parse(src: &str) -> Result<Graph> {
    let toks = Lexer { chars: src.char_indices().peekable(), src, line: 1 }.tokens()?;
    let mut p = Parser { toks, pos: 0, g: Graph::default(), names: HashMap::new() };
    p.graph()?;
    crate::verify::verify(&p.g)?;
    Ok(p.g)
}

impl Parser {
    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(1, |t| t.0)
    }

    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Parse { line: self.line(), msg: msg.into() }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }

    fn next(&mut self) -> Result<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.1.clone()).ok_or_else(|| self.err("unexpected end of input"))?;
        self.pos += 1;
        Ok(t)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Result<()> {
        if self.eat(c) { Ok(()) } else { Err(self.err(format!("expected '{c}'"))) }
    }

    fn ident(&mut self) -> Result<String> {
        match self.next()? {
            Tok::Ident(s) => Ok(s),
            t => Err(self.err(format!("expected a word, found {t:?}"))),
        }
    }

    fn define(&mut self, name: String) -> Result<ValueId> {
        if self.names.contains_key(&name) {
            return Err(self.err(format!("value '%{name}' is defined twice")));
        }
        let id = self.g.add_value(name.clone());
        self.names.insert(name, id);
        Ok(id)
    }

    fn use_value(&mut self) -> Result<Option<ValueId>> {
        match self.next()? {
            Tok::Ident(s) if s == "_" => Ok(None),
            Tok::Value(name) => {
                self.names.get(&name).copied().map(Some).ok_or_else(|| self.err(format!("value '%{name}' is not defined")))
            }
            t => Err(self.err(format!("expected a value, found {t:?}"))),
        }
    }

    fn graph(&mut self) -> Result<()> {
        if self.ident()? != "graph" {
            return Err(self.err("expected 'graph'"));
        }
        self.expect('{')?;
        loop {
            match self.peek() {
                Some(Tok::Punct('}')) => {
                    self.pos += 1;
                    break;
                }
                Some(Tok::Ident(w)) if w == "input" => {
                    self.pos += 1;
                    self.input()?;
                }
                Some(Tok::Ident(w)) if w == "const" => {
                    self.pos += 1;
                    self.constant()?;
                }
                Some(Tok::Ident(w)) if w == "output" => {
                    self.pos += 1;
                    let v = self.use_value()?.ok_or_else(|| self.err("an output cannot be '_'"))?;
                    self.g.outputs.push(v);
                }
                Some(_) => self.node()?,
                None => return Err(self.err("missing '}'")),
            }
        }
        if self.pos != self.toks.len() {
            return Err(self.err("text after the end of the graph"));
        }
        Ok(())
    }

    fn value_name(&mut self) -> Result<String> {
        match self.next()? {
            Tok::Value(n) => Ok(n),
            t => Err(self.err(format!("expected a value name, found {t:?}"))),
        }
    }

    fn dtype(&mut self) -> Result<DType> {
        let w = self.ident()?;
        DType::from_name(&w).ok_or_else(|| self.err(format!("unknown dtype '{w}'")))
    }

    fn usize(&mut self) -> Result<usize> {
        match self.next()? {
            Tok::Num(n) => n.parse().map_err(|_| self.err(format!("'{n}' is not a dimension"))),
            t => Err(self.err(format!("expected a number, found {t:?}"))),
        }
    }

    /// `f32[2,3]` or `f32[?]`.
    fn value_type(&mut self) -> Result<ValueType> {
        let dtype = self.dtype()?;
        self.expect('[')?;
        if self.eat('?') {
            self.expect(']')?;
            return Ok(ValueType::unknown(dtype));
        }
        let mut dims = Vec::new();
        if !self.eat(']') {
            loop {
                dims.push(self.usize()?);
                if self.eat(']') {
                    break;
                }
                self.expect(',')?;
            }
        }
        crate::tensor::checked_numel(&dims).map_err(|e| self.err(e.to_string()))?;
        Ok(ValueType::new(dtype, dims))
    }

    fn input(&mut self) -> Result<()> {
        let name = self.value_name()?;
        self.expect(':')?;
        let dtype = self.dtype()?;
        self.expect('[')?;
        let mut dims = Vec::new();
        if !self.eat(']') {
            loop {
                dims.push(match self.next()? {
                    Tok::Num(n) => Dim::Fixed(n.parse().map_err(|_| self.err(format!("bad dimension '{n}'")))?),
                    Tok::Ident(s) | Tok::Str(s) => Dim::Symbol(s),
                    t => return Err(self.err(format!("expected a dimension, found {t:?}"))),
                });
                if self.eat(']') {
                    break;
                }
                self.expect(',')?;
            }
        }
        let value = self.define(name)?;
        self.g.inputs.push(Input { value, dtype, dims });
        Ok(())
    }

    fn constant(&mut self) -> Result<()> {
        let name = self.value_name()?;
        self.expect(':')?;
        let ty = self.value_type()?;
        self.expect('=')?;
        let t = self.tensor_data(&ty)?;
        let id = self.define(name)?;
        self.g.consts.insert(id, Arc::new(t));
        Ok(())
    }

    fn scalar_list(&mut self) -> Result<Vec<Tok>> {
        self.expect('[')?;
        let mut items = Vec::new();
        if self.eat(']') {
            return Ok(items);
        }
        loop {
            items.push(self.next()?);
            if self.eat(']') {
                return Ok(items);
            }
            self.expect(',')?;
        }
    }

    fn tensor_data(&mut self, ty: &ValueType) -> Result<Tensor> {
        if self.peek() == Some(&Tok::Ident("...".into())) {
            return Err(self.err("elided constant data cannot be parsed"));
        }
        let items = self.scalar_list()?;
        let shape = ty.shape.clone().ok_or_else(|| self.err("a constant needs a static shape"))?;
        let n: usize = shape.iter().product();
        if items.len() != n {
            return Err(self.err(format!("{} values for a tensor of {n} elements", items.len())));
        }
        if ty.dtype.is_int() {
            return self.int_tensor(ty.dtype, &shape, &items);
        }
        let mut vals = Vec::with_capacity(n);
        for t in &items {
            vals.push(match t {
                Tok::Ident(w) if w == "true" => 1.0,
                Tok::Ident(w) if w == "false" => 0.0,
                Tok::Ident(w) | Tok::Num(w) => w.parse::<f64>().map_err(|_| self.err(format!("'{w}' is not a number")))?,
                t => return Err(self.err(format!("expected a number, found {t:?}"))),
            });
        }
        Tensor::from_fn_f64(ty.dtype, shape, |i| vals[i])
    }

    fn int_tensor(&self, dtype: DType, shape: &[usize], items: &[Tok]) -> Result<Tensor> {
        let mut ints = Vec::with_capacity(items.len());
        for t in items {
            match t {
                Tok::Num(w) => ints.push(w.parse::<i128>().map_err(|_| self.err(format!("'{w}' is not an integer")))?),
                t => return Err(self.err(format!("expected an integer, found {t:?}"))),
            }
        }
        let data = crate::with_dtype!(dtype, T => <T as crate::tensor::Elem>::into_data(
            ints.iter().map(|&i| <T as crate::tensor::Elem>::from_i128(i)).collect()));
        Tensor::new(shape.to_vec(), data)
    }

    fn attr_value(&mut self) -> Result<Attr> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Attr::String(s))
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                parse_number(&n).ok_or_else(|| self.err(format!("'{n}' is not a number")))
            }
            Some(Tok::Ident(w)) if matches!(w.as_str(), "inf" | "NaN") => {
                self.pos += 1;
                parse_number(&w).ok_or_else(|| self.err("bad number"))
            }
            Some(Tok::Ident(w)) if matches!(w.as_str(), "ints" | "floats" | "strings") => {
                self.pos += 1;
                self.expect('[')?;
                self.expect(']')?;
                Ok(match w.as_str() {
                    "ints" => Attr::Ints(vec![]),
                    "floats" => Attr::Floats(vec![]),
                    _ => Attr::Strings(vec![]),
                })
            }
            Some(Tok::Ident(w)) if w == "tensor" => {
                self.pos += 1;
                let ty = self.value_type()?;
                Ok(Attr::Tensor(self.tensor_data(&ty)?))
            }
            Some(Tok::Punct('[')) => {
                let items = self.scalar_list()?;
                if items.iter().all(|t| matches!(t, Tok::Str(_))) {
                    return Ok(Attr::Strings(
                        items.into_iter().map(|t| if let Tok::Str(s) = t { s } else { String::new() }).collect(),
                    ));
                }
                let nums: Vec<Attr> = items
                    .iter()
                    .map(|t| match t {
                        Tok::Num(n) | Tok::Ident(n) => parse_number(n),
                        _ => None,
                    })
                    .collect::<Option<_>>()
                    .ok_or_else(|| self.err("a list must hold only numbers or only strings"))?;
                if nums.iter().all(|a| matches!(a, Attr::Int(_))) {
                    Ok(Attr::Ints(nums.iter().map(|a| if let Attr::Int(i) = a { *i } else { 0 }).collect()))
                } else {
                    Ok(Attr::Floats(
                        nums.iter()
                            .map(|a| match a {
                                Attr::Int(i) => *i as f32,
                                Attr::Float(f) => *f,
                                _ => 0.0,
                            })
                            .collect(),
                    ))
                }
            }
            t => Err(self.err(format!("expected an attribute value, found {t:?}"))),
        }
    }

    fn node(&mut self) -> Result<()> {
        let mut outs: Vec<(Option<String>, Option<ValueType>)> = Vec::new();
        loop {
            match self.next()? {
                Tok::Ident(s) if s == "_" => outs.push((None, None)),
                Tok::Value(name) => {
                    let ty = if self.eat(':') { Some(self.value_type()?) } else { None };
                    outs.push((Some(name), ty));
                }
                t => return Err(self.err(format!("expected a node's outputs, found {t:?}"))),
            }
            if self.eat('=') {
                break;
            }
            self.expect(',')?;
        }
        let op_name = self.ident()?;
        let kind = OpKind::from_name(&op_name).ok_or_else(|| self.err(format!("unknown op '{op_name}'")))?;
        self.expect('@')?;
        let version = self.usize()? as u32;
        let name = match self.next()? {
            Tok::Str(s) => s,
            t => return Err(self.err(format!("expected the node name as a string, found {t:?}"))),
        };
        let mut attrs = Attrs::new();
        if self.eat('{') {
            loop {
                let key = self.ident()?;
                self.expect('=')?;
                let v = self.attr_value()?;
                if attrs.has(&key) {
                    return Err(self.err(format!("attribute '{key}' is given twice")));
                }
                attrs.set(&key, v);
                if self.eat('}') {
                    break;
                }
                self.expect(',')?;
            }
        }
        self.expect('(')?;
        let mut inputs = Vec::new();
        if !self.eat(')') {
            loop {
                inputs.push(self.use_value()?);
                if self.eat(')') {
                    break;
                }
                self.expect(',')?;
            }
        }
        let mut outputs = Vec::new();
        for (name, ty) in outs {
            match name {
                None => outputs.push(None),
                Some(n) => {
                    let id = self.define(n)?;
                    self.g.values[id.index()].ty = ty;
                    outputs.push(Some(id));
                }
            }
        }
        self.g.nodes.push(Node { name, op: Op { kind, attrs, version }, inputs, outputs });
        Ok(())
    }
}

fn parse_number(w: &str) -> Option<Attr> {
    if let Ok(i) = w.parse::<i64>() {
        return Some(Attr::Int(i));
    }
    w.parse::<f32>().ok().map(Attr::Float)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_keeps_every_item() -> Result<()> {
        let src = r#"graph {
  input %x: f32[batch,4]
  input %"odd name/1": i64[3]
  const %w: f32[4,2] = [0.5, -1.0, 2.0, 0.0, 1.5, 3.0, -2.0, 1.0]
  const %k: i64[2] = [-9223372036854775808, 7]
  %y = MatMul@17 "mm" (%x, %w)
  %z, _ = Split@17 "split" {axis=1, split=[1, 1], names=["a", "b"], empty=floats[], scale=2.5, t=tensor f32[2] [1.0, -inf]} (%y)
  output %z
}
"#;
        let g = parse(src)?;
        let printed = print(&g, None);
        assert_eq!(parse(&printed)?, g);
        assert_eq!(printed, print(&parse(&printed)?, None));
        Ok(())
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("graph {\n  input %x: f32[2]\n  %y = NoSuchOp@17 \"n\" (%x)\n}\n");
        assert!(matches!(err, Err(Error::Parse { line: 3, .. })), "{err:?}");
        let err = parse("graph {\n  %y = Relu@17 \"n\" (%x)\n}\n");
        assert!(matches!(err, Err(Error::Parse { line: 2, .. })), "{err:?}");
    }
}
