use candle_core::IndexOp;
use puppetlens::*;
fn main() -> anyhow::Result<()> {
    let p = fetch::fetch("smollm2-135m-instruct")?;
    let (m, tok) = load(&p)?;
    let mq = Model::load(
        &p,
        &LoadOptions {
            keep_quantized: true,
            ..Default::default()
        },
    )?;
    let ids = tok.encode("The capital of France is")?;
    let b = Batch::single(&ids)?;
    let a = m.forward_last(&b, &mut Hooks::new())?.i(0)?;
    let q = mq.forward_last(&b, &mut Hooks::new())?.i(0)?;
    println!("f32 vs q {}", (&a - &q)?.abs()?.max(0)?);
    let mut f = std::fs::File::open(&p)?;
    let c = candle_core::quantized::gguf_file::Content::read(&mut f)?;
    let mut r = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        c,
        &mut f,
        &candle_core::Device::Cpu,
    )?;
    let t = r
        .forward(
            &candle_core::Tensor::new(ids.as_slice(), &candle_core::Device::Cpu)?.unsqueeze(0)?,
            0,
        )?
        .i(0)?;
    println!(
        "ref vs q {} ref vs f32 {}",
        (&t - &q)?.abs()?.max(0)?,
        (&t - &a)?.abs()?.max(0)?
    );
    Ok(())
}
#[allow(dead_code)]
fn x() {}
