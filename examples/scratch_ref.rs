use candle_core::{DType, Device, IndexOp, Tensor};
use puppetlens::{Batch, Hooks, LoadOptions, Model};
fn main() -> anyhow::Result<()> {
    let dev = Device::Cpu;
    let path = "/root/.cache/puppetlens/models/gemma-3-270m/gemma-3-270m-q4_k_m.gguf";
    let ids = vec![2u32, 818, 5279, 529, 7001, 563];
    let m = Model::load(path, &LoadOptions::default())?;
    let ours = m
        .forward_last(&Batch::single(&ids)?, &mut Hooks::new())?
        .i(0)?;
    let dir = std::path::Path::new("/tmp/gemma_st");
    let t = std::time::Instant::now();
    m.export_safetensors(dir)?;
    println!("export {:?}", t.elapsed());
    let m2 = Model::load(dir, &LoadOptions::default())?;
    let ours2 = m2
        .forward_last(&Batch::single(&ids)?, &mut Hooks::new())?
        .i(0)?;
    println!(
        "gguf vs st: {}",
        (&ours - &ours2)?.abs()?.max_all()?.to_scalar::<f32>()?
    );
    let c = m.config();
    let cfg = candle_transformers::models::gemma3::Config {
        attention_bias: false,
        head_dim: c.head_dim,
        hidden_activation: candle_nn::Activation::GeluPytorchTanh,
        hidden_size: c.d_model,
        intermediate_size: c.d_mlp,
        num_attention_heads: c.n_heads,
        num_hidden_layers: c.n_layers,
        num_key_value_heads: c.n_kv_heads,
        rms_norm_eps: c.rms_eps,
        rope_theta: c.rope_theta as f64,
        rope_local_base_freq: 10000.0,
        vocab_size: c.vocab_size,
        final_logit_softcapping: None,
        attn_logit_softcapping: None,
        query_pre_attn_scalar: 256,
        sliding_window: 512,
        sliding_window_pattern: 6,
        max_position_embeddings: c.max_position,
    };
    let vb = unsafe {
        candle_nn::VarBuilder::from_mmaped_safetensors(
            &[dir.join("model.safetensors")],
            DType::F32,
            &dev,
        )?
    };
    let mut r = candle_transformers::models::gemma3::Model::new(false, &cfg, vb)?;
    let input = Tensor::new(ids.as_slice(), &dev)?.unsqueeze(0)?;
    let theirs = r.forward(&input, 0)?.squeeze(0)?.squeeze(0)?;
    println!("{:?} {:?}", theirs.dims(), ours.dims());
    let d = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let mx = theirs.abs()?.max_all()?.to_scalar::<f32>()?;
    println!(
        "max abs diff {d} (max |logit| {mx}); argmax ours {} theirs {}",
        ours.argmax(0)?.to_scalar::<u32>()?,
        theirs.argmax(0)?.to_scalar::<u32>()?
    );
    Ok(())
}
