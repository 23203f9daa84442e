//! Ahead-of-time objects (`compile_object`): a small program compiles to an ELF object
//! whose math helpers are the C library's; malformed programs are refused. Linking and
//! running objects with a C driver is `tests/aot.rs` of the root package.

use codegen::Error;
use codegen::cranelift::{BufferRef, OutputCopy, Program, ProgramStep, TensorDesc, compile_object};
use ir::atom::UnaryFn;
use ir::dtype::DType;
use ir::kernel::{Affine, Body, Buffer, Expr, Kernel};
use ir::schedule::Schedule;

/// `out[i, j] = exp(in[i, j])` over `[4, 8]`.
fn exp_kernel() -> Kernel {
    let buf = |name: &str| Buffer {
        name: name.into(),
        dtype: DType::F32,
        numel: 32,
    };
    let index = Affine {
        offset: 0,
        coefs: vec![8, 1],
    };
    Kernel {
        name: "exp".into(),
        inputs: vec![buf("x")],
        output: buf("out"),
        out_shape: vec![4, 8],
        red_shape: vec![],
        store: index.clone(),
        body: Body::Compute {
            reduce: None,
            body: Expr::Unary(
                UnaryFn::Exp,
                Box::new(Expr::Load {
                    buf: 0,
                    index,
                    guards: vec![],
                    pad: 0.0,
                }),
            ),
            epilogue: Expr::Acc,
        },
    }
}

fn desc(name: &str) -> TensorDesc {
    TensorDesc {
        name: name.into(),
        dtype: DType::F32,
        shape: vec![4, 8],
    }
}

/// exp(exp(x)) through the workspace into output 0, and x copied into output 1.
fn program() -> Program {
    Program {
        steps: vec![
            ProgramStep {
                kernel: 0,
                buffers: vec![BufferRef::Input(0), BufferRef::Workspace(0)],
                prepared: None,
            },
            ProgramStep {
                kernel: 0,
                buffers: vec![BufferRef::Workspace(0), BufferRef::Output(0)],
                prepared: None,
            },
        ],
        copies: vec![OutputCopy {
            output: 1,
            from: BufferRef::Input(0),
            bytes: 128,
        }],
        workspace_bytes: 128,
        inputs: vec![desc("x")],
        outputs: vec![desc("y"), desc("x_copy")],
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn program_compiles_to_an_elf_object_with_c_math() -> Result<(), Error> {
    let obj = compile_object("tiny", &[exp_kernel()], &[Schedule::naive()], &program(), &[])?;
    assert_eq!(&obj[..4], b"\x7fELF");
    for sym in ["tiny_run\0", "tiny_workspace_size\0", "tiny_input_shape\0", "expf\0", "memcpy\0"] {
        assert!(contains(&obj, sym.as_bytes()), "{sym} in the object");
    }
    assert!(!contains(&obj, b"atomc_expf"), "helpers are renamed to the C library's");
    Ok(())
}

#[test]
fn malformed_programs_are_refused() {
    let k = [exp_kernel()];
    let naive = [Schedule::naive()];
    let mut p = program();
    p.steps[0].kernel = 3;
    let e = compile_object("tiny", &k, &naive, &p, &[]);
    assert!(matches!(e, Err(Error::InvalidInput { .. })), "{e:?}");
    let mut p = program();
    p.steps[1].buffers[0] = BufferRef::Workspace(64);
    let e = compile_object("tiny", &k, &naive, &p, &[]);
    assert!(matches!(e, Err(Error::InvalidInput { .. })), "{e:?}");
    let mut p = program();
    p.steps[0].buffers[0] = BufferRef::Weight(0);
    assert!(compile_object("tiny", &k, &naive, &p, &[]).is_err(), "weights out of range");
    assert!(compile_object("tiny", &k, &naive, &p, &[0u8; 128]).is_ok());
    assert!(matches!(compile_object("1tiny", &k, &naive, &program(), &[]), Err(Error::InvalidInput { .. })));
}
