"""NVIDIA's side of benchmarks/stylegan1_reference.py: run as an outside program with TensorFlow and NVIDIA's
NVlabs/stylegan checkout on the path, never imported by the project.

    <tf python> benchmarks/stylegan1_official_side.py --dest OUT.npz --pickle OUT.pkl --res 32 [--seed 0] [--count 4]
Builds G, D and Gs with NVIDIA's `training.networks_stylegan` as training_loop.py does (small widths), moves every
variable off its initial value (so that each one changes the outputs), pickles (G, D, Gs) with NVIDIA's own pickling,
and saves Gs's and D's variables, their arguments and their outputs: uint8 images at psi 0.7 and 1.0 with stored
noise, float images, ws, a style-mixed synthesis, D's scores, and G and D at a fractional lod. The run-time shims are
the three of ../shared/notes/stylegan1.md: TF 1 behaviour under TF 2, integer noise shapes, soft device placement.
"""

import argparse
import json
import pickle
import sys

import numpy as np
import tensorflow.compat.v1 as tf

tf.disable_v2_behavior()
sys.modules["tensorflow"] = tf
_get_variable = tf.get_variable


def _get_variable_int_shape(name, shape=None, *args, **kwargs):
    if shape is not None:
        shape = [int(s) if isinstance(s, bool) else s for s in shape]
    return _get_variable(name, shape, *args, **kwargs)


tf.get_variable = _get_variable_int_shape

import dnnlib.tflib as tflib  # noqa: E402  (NVIDIA's, from their checkout)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dest", required=True)
    parser.add_argument("--pickle", required=True)
    parser.add_argument("--res", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=4, help="latents (and D inputs)")
    args = parser.parse_args()
    tflib.init_tf({"allow_soft_placement": True, "rnd.np_random_seed": args.seed, "rnd.tf_random_seed": args.seed})
    kwargs = dict(num_channels=3, resolution=args.res, label_size=0, fmap_base=256, fmap_max=32)
    g_kwargs = dict(kwargs, latent_size=48, dlatent_size=40, mapping_fmaps=24, mapping_layers=3)
    G = tflib.Network("G", func_name="training.networks_stylegan.G_style", **g_kwargs)
    D = tflib.Network("D", func_name="training.networks_stylegan.D_basic", **kwargs)
    Gs = G.clone("Gs")
    rng = np.random.RandomState(args.seed)
    for net in (G, D, Gs):
        tflib.set_vars({var: tflib.run(var) + rng.normal(0, 0.2, var.shape.as_list()).astype(np.float32)
                        for name, var in net.vars.items() if not name.endswith("lod")})
    with open(args.pickle, "wb") as f:
        pickle.dump((G, D, Gs), f, protocol=pickle.HIGHEST_PROTOCOL)

    out = {f"Gs/{k}": v for k, v in zip(Gs.vars.keys(), tflib.run(list(Gs.vars.values())), strict=True)}
    out.update({f"D/{k}": v for k, v in zip(D.vars.keys(), tflib.run(list(D.vars.values())), strict=True)})
    to_uint8 = dict(func=tflib.convert_images_to_uint8, nchw_to_nhwc=True)
    z = np.random.RandomState(args.seed).randn(args.count, 48).astype(np.float32)
    out["z"] = z
    out["img_psi07_uint8"] = Gs.run(z, None, truncation_psi=0.7, randomize_noise=False, output_transform=to_uint8)
    out["img_psi10_uint8"] = Gs.run(z, None, truncation_psi=1.0, randomize_noise=False, output_transform=to_uint8)
    out["img_psi07"] = Gs.run(z, None, truncation_psi=0.7, randomize_noise=False)
    out["ws"] = Gs.components.mapping.run(z, None)
    mixed = out["ws"].copy()
    mixed[:, 4:] = out["ws"][::-1, 4:]  # layers 4 on from the other latents
    out["img_mixed"] = Gs.components.synthesis.run(mixed, randomize_noise=False)
    out["d_input"] = rng.normal(0, 1, [args.count, 3, args.res, args.res]).astype(np.float32)
    out["d_scores"] = D.run(out["d_input"], None)
    out["d_scores_fake"] = D.run(out["img_psi07"], None)
    tflib.set_vars({Gs.find_var("lod"): 1.3, D.find_var("lod"): 1.3})
    out["img_lod13"] = Gs.run(z, None, truncation_psi=1.0, randomize_noise=False)
    out["d_scores_lod13"] = D.run(out["d_input"], None)
    out["meta_json"] = np.frombuffer(json.dumps({"G": g_kwargs, "D": kwargs, "seed": args.seed}).encode(), np.uint8)
    np.savez(args.dest, **out)


if __name__ == "__main__":
    main()
