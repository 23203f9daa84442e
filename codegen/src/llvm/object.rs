//! Ahead-of-time compilation with LLVM: a whole kernel [`Program`] into one relocatable ELF
//! object for a target triple and CPU that need not be the host's (x86-64 or AArch64),
//! exporting the same C API as the Cranelift object (`crate::cranelift::object`), so the
//! same header and drivers link with it (`cc driver.c model.o -lm`, or
//! `aarch64-linux-gnu-gcc` for AArch64).
//!
//! The module is LLVM IR text: every kernel an `internal` function of the JIT's ABI
//! (lowered by `lower.rs`/`nest.rs` with the target's FMA, and carrying the target's
//! `target-cpu`/`target-features`), `<name>_run` a straight sequence of kernel calls (each
//! over its whole parallel range, a stack table of buffer addresses; the first nonzero
//! code is returned) followed by the output copies (`llvm.memcpy`), and the size and
//! description functions reading constant tables. The weights are one private constant of
//! 64-byte alignment, set through the LLVM API (not spelled out in the text). The module
//! runs `default<O3>` and a `TargetMachine` for the triple writes the object.
//!
//! Math helpers without a polynomial are called by their C library names (`atomc_expf`
//! becomes `expf`) so the object links with `-lm`; the Python-style float remainder
//! (`atomc_modf`), which has no C counterpart, is defined in the object.

use super::{HostTarget, METADATA, PARAMS, lower_function};
use crate::Error;
use crate::cranelift::libcalls;
use crate::cranelift::object::check_program;
use crate::cranelift::{BufferRef, Program, TensorDesc};
use inkwell::OptimizationLevel;
use inkwell::context::Context;
use inkwell::memory_buffer::MemoryBuffer;
use inkwell::module::Linkage;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine, TargetTriple};
use ir::kernel::Kernel;
use ir::schedule::Schedule;
use std::collections::BTreeSet;
use std::fmt::Write as _;

type Result<T> = std::result::Result<T, Error>;

/// Compiles `program` over `kernels` (`schedules[i]` for `kernels[i]`) with the weight
/// bytes `weights` into an ELF object for `target` (triple, LLVM CPU name and feature
/// string) exporting the C API of `crate::cranelift::object` under `name` (a C
/// identifier).
pub fn compile_object(
    name: &str,
    kernels: &[Kernel],
    schedules: &[Schedule],
    program: &Program,
    weights: &[u8],
    target: &HostTarget,
) -> Result<Vec<u8>> {
    let bad = |msg: String| Error::InvalidInput { kernel: name.to_string(), msg };
    let internal = |msg: String| Error::Internal { kernel: name.to_string(), msg };
    if name.is_empty()
        || name.starts_with(|c: char| c.is_ascii_digit())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(bad(format!("'{name}' is not a C identifier")));
    }
    if schedules.len() != kernels.len() {
        return Err(bad(format!("{} schedules for {} kernels", schedules.len(), kernels.len())));
    }
    check_program(program, kernels, weights.len()).map_err(bad)?;
    let machine = machine(target).map_err(|msg| Error::Unsupported { kernel: name.to_string(), msg })?;
    let layout = machine.get_target_data().get_data_layout();
    let layout = layout.as_str().to_string_lossy().into_owned();

    let mut text = String::new();
    let _ = writeln!(text, "target datalayout = \"{layout}\"");
    let _ = writeln!(text, "target triple = \"{}\"", target.triple);
    let mut decls = BTreeSet::new();
    let mut attributes = Vec::new();
    let mut extents = Vec::with_capacity(kernels.len());
    for (i, (k, s)) in kernels.iter().zip(schedules).enumerate() {
        ir::kernel::verify(k).map_err(|e| Error::InvalidKernel { kernel: k.name.clone(), msg: e.to_string() })?;
        let f = lower_function(k, s, target)?;
        let _ = writeln!(text, "define internal i32 @{name}_k{i}{PARAMS} #{i} {{\n{}}}", f.body);
        attributes.push(f.attributes(target));
        decls.extend(f.decls);
        extents.push(s.parallel_extent(k));
    }
    let plain = kernels.len();
    let _ = writeln!(
        text,
        "attributes #{plain} = {{ nounwind \"target-cpu\"=\"{}\" \"target-features\"=\"{}\" }}",
        target.cpu, target.features
    );
    for (i, a) in attributes.iter().enumerate() {
        let _ = writeln!(text, "attributes #{i} = {{ {a} }}");
    }
    let _ = writeln!(text, "{METADATA}");
    decls.retain(|d| !d.contains("@atomc_modf("));
    for d in &decls {
        let _ = writeln!(text, "{d}");
    }
    let _ = writeln!(
        text,
        "define internal float @atomc_modf(float %a, float %b) #{plain} {{\n  %r = frem float %a, %b\n  \
         %nz = fcmp une float %r, 0.0\n  %rn = fcmp olt float %r, 0.0\n  %bn = fcmp olt float %b, 0.0\n  \
         %differ = xor i1 %rn, %bn\n  %fix = and i1 %nz, %differ\n  %sum = fadd float %r, %b\n  \
         %out = select i1 %fix, float %sum, float %r\n  ret float %out\n}}"
    );
    if !weights.is_empty() {
        let _ = writeln!(text, "@{name}_weights = external global [{} x i8], align 64", weights.len());
    }
    run_fn(&mut text, name, &extents, program, !weights.is_empty(), plain).map_err(bad)?;
    describe(&mut text, name, program, plain);
    for h in libcalls::all().into_iter().chain(super::helpers64::all()) {
        if let Some(c) = h.name.strip_prefix("atomc_").filter(|_| h.name != "atomc_modf") {
            text = text.replace(&format!("@{}(", h.name), &format!("@{c}("));
        }
    }

    let context = Context::create();
    let buffer = MemoryBuffer::create_from_memory_range_copy(text.as_bytes(), name);
    let module = context
        .create_module_from_ir(buffer)
        .map_err(|e| internal(format!("parsing the generated IR: {}", e.to_string_lossy())))?;
    if !weights.is_empty() {
        let global = module
            .get_global(&format!("{name}_weights"))
            .ok_or_else(|| internal("the weights global is missing".into()))?;
        global.set_initializer(&context.const_string(weights, false));
        global.set_constant(true);
        global.set_linkage(Linkage::Private);
        global.set_alignment(64);
    }
    module.verify().map_err(|e| internal(format!("verifying the generated IR: {}", e.to_string_lossy())))?;
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| internal(format!("optimizing: {}", e.to_string_lossy())))?;
    let object = machine
        .write_to_memory_buffer(&module, FileType::Object)
        .map_err(|e| internal(format!("writing the object: {}", e.to_string_lossy())))?;
    Ok(object.as_slice().to_vec())
}

/// The target machine for `t` (position-independent code, so objects link into PIE
/// executables).
fn machine(t: &HostTarget) -> std::result::Result<TargetMachine, String> {
    let config = InitializationConfig::default();
    Target::initialize_x86(&config);
    Target::initialize_aarch64(&config);
    let triple = TargetTriple::create(&t.triple);
    let target = Target::from_triple(&triple).map_err(|e| format!("LLVM does not support {}: {e}", t.triple))?;
    target
        .create_target_machine(&triple, &t.cpu, &t.features, OptimizationLevel::Aggressive, RelocMode::PIC, CodeModel::Default)
        .ok_or_else(|| format!("LLVM has no target machine for {} ({})", t.triple, t.cpu))
}

/// Appends `int <name>_run(const void* const* inputs, void* const* outputs, void* workspace)`.
fn run_fn(
    text: &mut String,
    name: &str,
    extents: &[usize],
    p: &Program,
    has_weights: bool,
    attrs: usize,
) -> std::result::Result<(), String> {
    let slots = p.steps.iter().map(|s| s.buffers.len()).max().unwrap_or(0).max(1);
    let _ = writeln!(text, "define i32 @{name}_run(ptr %inputs, ptr %outputs, ptr %ws) #{attrs} {{\nentry:");
    let _ = writeln!(text, "  %bufs = alloca [{slots} x ptr], align 8");
    // The address of buffer `r` as a fresh value named after `tag`.
    let addr = |text: &mut String, tag: &str, r: BufferRef| -> std::result::Result<String, String> {
        let v = format!("%{tag}");
        match r {
            BufferRef::Input(i) | BufferRef::Output(i) => {
                let table = if matches!(r, BufferRef::Input(_)) { "%inputs" } else { "%outputs" };
                let _ = writeln!(text, "  {v}.p = getelementptr inbounds ptr, ptr {table}, i64 {i}");
                let _ = writeln!(text, "  {v} = load ptr, ptr {v}.p, align 8");
            }
            BufferRef::Workspace(o) => {
                let _ = writeln!(text, "  {v} = getelementptr inbounds i8, ptr %ws, i64 {o}");
            }
            BufferRef::Weight(o) => {
                if !has_weights {
                    return Err("a step reads weights, the object has none".into());
                }
                let _ = writeln!(text, "  {v} = getelementptr inbounds i8, ptr @{name}_weights, i64 {o}");
            }
        }
        Ok(v)
    };
    for (i, s) in p.steps.iter().enumerate() {
        for (j, &r) in s.buffers.iter().enumerate() {
            let v = addr(text, &format!("s{i}.b{j}"), r)?;
            let _ = writeln!(text, "  %s{i}.slot{j} = getelementptr inbounds ptr, ptr %bufs, i64 {j}");
            let _ = writeln!(text, "  store ptr {v}, ptr %s{i}.slot{j}, align 8");
        }
        let extent = extents.get(s.kernel).copied().ok_or_else(|| format!("step {i} names no kernel"))?;
        let _ = writeln!(text, "  %s{i}.rc = call i32 @{name}_k{}(ptr %bufs, i64 0, i64 {extent})", s.kernel);
        let _ = writeln!(text, "  %s{i}.ok = icmp eq i32 %s{i}.rc, 0");
        let _ = writeln!(text, "  br i1 %s{i}.ok, label %s{i}.next, label %s{i}.fail, !prof !1");
        let _ = writeln!(text, "s{i}.fail:\n  ret i32 %s{i}.rc\ns{i}.next:");
    }
    for (i, c) in p.copies.iter().enumerate() {
        if c.bytes == 0 {
            continue;
        }
        let dst = addr(text, &format!("c{i}.dst"), BufferRef::Output(c.output))?;
        let src = addr(text, &format!("c{i}.src"), c.from)?;
        let _ = writeln!(text, "  call void @llvm.memcpy.p0.p0.i64(ptr {dst}, ptr {src}, i64 {}, i1 false)", c.bytes);
    }
    let _ = writeln!(text, "  ret i32 0\n}}");
    let _ = writeln!(text, "!1 = !{{!\"branch_weights\", i32 2000, i32 1}}");
    if !p.copies.is_empty() {
        let _ = writeln!(text, "declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)");
    }
    Ok(())
}

/// `s` as an LLVM string constant with a terminating NUL (`c"..."`).
fn c_string(s: &str) -> (usize, String) {
    let mut out = String::from("c\"");
    for b in s.bytes() {
        if (b.is_ascii_graphic() && b != b'"' && b != b'\\') || b == b' ' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:02X}");
        }
    }
    out.push_str("\\00\"");
    (s.len() + 1, out)
}

/// Appends the size and description functions of the C API.
fn describe(text: &mut String, name: &str, p: &Program, attrs: usize) {
    let _ = writeln!(text, "define i64 @{name}_workspace_size() #{attrs} {{\n  ret i64 {}\n}}", p.workspace_bytes);
    let _ = writeln!(text, "define i32 @{name}_num_inputs() #{attrs} {{\n  ret i32 {}\n}}", p.inputs.len());
    let _ = writeln!(text, "define i32 @{name}_num_outputs() #{attrs} {{\n  ret i32 {}\n}}", p.outputs.len());
    for (kind, list) in [("input", &p.inputs), ("output", &p.outputs)] {
        let mut names = Vec::new();
        let mut shapes = Vec::new();
        for (i, t) in list.iter().enumerate() {
            let (n, s) = c_string(&t.name);
            let _ = writeln!(text, "@{name}_{kind}_name_{i} = private unnamed_addr constant [{n} x i8] {s}");
            names.push(format!("ptr @{name}_{kind}_name_{i}"));
            let dims: Vec<String> = t.shape.iter().map(|d| format!("i64 {d}")).collect();
            let init = if dims.is_empty() { "[1 x i64] zeroinitializer".to_string() } else { format!("[{} x i64] [{}]", dims.len(), dims.join(", ")) };
            let _ = writeln!(text, "@{name}_{kind}_shape_{i} = private unnamed_addr constant {init}, align 8");
            shapes.push(format!("ptr @{name}_{kind}_shape_{i}"));
        }
        let dtypes: Vec<String> = list.iter().map(|t| format!("i32 {}", t.dtype.onnx_code())).collect();
        let ranks: Vec<String> = list.iter().map(|t| format!("i32 {}", t.shape.len())).collect();
        let bytes: Vec<String> = list.iter().map(|t: &TensorDesc| format!("i64 {}", t.bytes().unwrap_or(0))).collect();
        table(text, name, &format!("{kind}_name"), "ptr", &names, "null", attrs);
        table(text, name, &format!("{kind}_shape"), "ptr", &shapes, "null", attrs);
        table(text, name, &format!("{kind}_dtype"), "i32", &dtypes, "-1", attrs);
        table(text, name, &format!("{kind}_rank"), "i32", &ranks, "-1", attrs);
        table(text, name, &format!("{kind}_bytes"), "i64", &bytes, "0", attrs);
    }
}

/// Appends `ty <name>_<what>(int i)` returning `entries[i]` (typed constants), or
/// `default` for an `i` out of range.
fn table(text: &mut String, name: &str, what: &str, ty: &str, entries: &[String], default: &str, attrs: usize) {
    let n = entries.len();
    let init = if n == 0 { "zeroinitializer".to_string() } else { format!("[{}]", entries.join(", ")) };
    let _ = writeln!(text, "@{name}_{what}_table = private unnamed_addr constant [{n} x {ty}] {init}");
    let _ = writeln!(
        text,
        "define {ty} @{name}_{what}(i32 %i) #{attrs} {{\nentry:\n  %in = icmp ult i32 %i, {n}\n  br i1 %in, label %hit, label %miss\n\
         hit:\n  %ix = zext i32 %i to i64\n  %p = getelementptr inbounds [{n} x {ty}], ptr @{name}_{what}_table, i64 0, i64 %ix\n  \
         %v = load {ty}, ptr %p\n  ret {ty} %v\nmiss:\n  ret {ty} {default}\n}}"
    );
}
