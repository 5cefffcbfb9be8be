"""Command line: ``dualmcmc train | sample | evaluate | loglik`` (also ``python -m dualmcmc ...``).

    dualmcmc train configs/toy2d.yaml --set iterations=500 --set model.x_steps=20
    dualmcmc sample runs/toy2d -n 5000                  # runs/toy2d/samples.npy (and .png)
    dualmcmc evaluate runs/toy2d
    dualmcmc loglik runs/toy2d                          # AIS: log Z and held-out log-likelihood, RUN/loglik.json
    dualmcmc score runs/digits --data digits:test       # per-example energies (and log p), RUN/scores.npz
    dualmcmc ood runs/digits --out-data noise           # AUROC / AUPR / FPR95 of energy as a detector, RUN/ood.json
    dualmcmc interpolate runs/digits --kind linear      # latent paths through the generator, RUN/interpolate_*.png
    dualmcmc complete runs/digits --mask bottom         # inpainting of held-out data, error vs truth, RUN/complete_*.png
    torchrun --nproc_per_node=2 -m dualmcmc train configs/digits_dual_mcmc.yaml   # data-parallel (batch_size global)

Each command is a thin layer over the Python API (dualmcmc.train, dualmcmc.load_run, dualmcmc.run.evaluate_run),
so the two agree. Errors the user has to fix (config keys, data files, damaged checkpoints, a run directory that is
busy or not writable) print one line that names the key or path and the fix, and exit 2; a diverged run exits 3.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence


def _run_command(commands, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand that reads a trained run: its RUN argument and --device."""
    parser = commands.add_parser(name, **kwargs)
    parser.add_argument("run", help="run directory (holds checkpoint.pt)")
    parser.add_argument("--device", help="device to run on (default: the run's, when available)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualmcmc", description="Learn energy-based models by MCMC teaching.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,evaluate,loglik,score,ood,interpolate,complete}")

    train = commands.add_parser("train", help="train the method a YAML config names",
                                description="Train the method a YAML config names; resumes RUN/checkpoint.pt if present.")
    train.add_argument("config", help="YAML config (e.g. configs/toy2d.yaml)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, dotted for sections (iterations=500, model.x_steps=20, log.progress=false)")
    train.add_argument("--fresh", action="store_true", help="start over even if the run directory holds a checkpoint")

    sample = commands.add_parser("sample", help="draw samples from a trained run")
    sample.add_argument("run", help="run directory (holds checkpoint.pt)")
    sample.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--out", help="where to write the samples (.npy; default RUN/samples.npy; 2-D data and images "
                                      "also get a .png beside it)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the sampler's random numbers (default 0)")
    sample.add_argument("--generator-only", action="store_true", help="generator samples without the EBM's Langevin")
    sample.add_argument("--device", help="device to sample on (default: the run's, when available)")

    evaluate = commands.add_parser("evaluate", help="score a trained run into RUN/eval.json (2-D: grid KL/TV, MMD, "
                                   "modes; images: Frechet distance / MMD in classifier features, recon MSE)")
    evaluate.add_argument("run", help="run directory (holds checkpoint.pt)")
    evaluate.add_argument("--n-samples", type=int, help="samples to score (default: the run's eval.n_samples)")
    evaluate.add_argument("--resolution", type=int, help="2-D: grid cells per axis for KL/TV (default: the run's "
                                                         "eval.resolution)")
    evaluate.add_argument("--device", help="device to evaluate on (default: the run's, when available)")

    loglik = _run_command(commands, "loglik", help="AIS estimate of the EBM's log Z and held-out log-likelihood "
                                 "(into RUN/loglik.json)",
                                 description="Annealed importance sampling from a Gaussian fitted to the run's data to "
                                 "its EBM density exp(-U/T): log Z with a standard error, and the mean log-likelihood of "
                                 "held-out data (toys: fresh points; digits: the 300 held-out digits; --data: a file).")
    loglik.add_argument("--n-chains", type=int, default=1000, help="AIS chains (default 1000)")
    loglik.add_argument("--n-temps", type=int, default=500, help="inverse temperatures from 0 to 1 (default 500)")
    loglik.add_argument("--data", help="held-out data (a toy name, digits:test, a .npy/.npz or image folder)")
    loglik.add_argument("--seed", type=int, default=0, help="seed of the anneal's random numbers (default 0)")

    score = _run_command(commands, "score", help="per-example energies of data under a run's EBM (and log p when "
                                "RUN/loglik.json has log Z)")
    score.add_argument("--data", required=True, help="data to score (a toy name, digits:test, a .npy/.npz, a folder)")
    score.add_argument("--out", help="where to write them (.npz with 'energy' and, when known, 'log_p'; default "
                                     "RUN/scores.npz)")

    ood = _run_command(commands, "ood", help="out-of-distribution detection by energy: AUROC, AUPR, FPR at 95%% TPR "
                              "(into RUN/ood.json)")
    ood.add_argument("--out-data", required=True, help="out-of-distribution data: a data spec (e.g. "
                     "digits:test:classes=9), or 'noise' / 'inverted' made from the in-distribution data")
    ood.add_argument("--in-data", help="in-distribution data (default: the run's held-out data)")
    ood.add_argument("--seed", type=int, default=0, help="seed of the 'noise' set (default 0)")

    interpolate = _run_command(commands, "interpolate", help="latent interpolation grids through a run's generator (PNG)")
    interpolate.add_argument("--kind", choices=("spherical", "linear"), default="spherical",
                             help="path between two codes: the great circle (default) or the straight line")
    interpolate.add_argument("--rows", type=int, default=8, help="paths, one per row (default 8)")
    interpolate.add_argument("--steps", type=int, default=10, help="points along each path (default 10)")
    interpolate.add_argument("--out", help="picture (.png; default RUN/interpolate_KIND.png); the decoded points "
                                           "go beside it as .npy")
    interpolate.add_argument("--seed", type=int, default=0, help="seed of the end codes (default 0)")

    complete = _run_command(commands, "complete", help="inpainting / conditional sampling: the missing part of held-out "
                                   "data drawn from the EBM given the rest (error against the truth, PNG)")
    complete.add_argument("--mask", required=True, help="what is missing: left, right, top, bottom, center (images) or "
                          "random:P (each entry with probability P); for 2-D points left = x is missing (x given y)")
    complete.add_argument("--data", help="the data to complete (default: the run's held-out data)")
    complete.add_argument("-n", type=int, default=100, help="how many examples (default 100)")
    complete.add_argument("--steps", type=int, help="chain steps (default: the run's test-time EBM chain)")
    complete.add_argument("--out", help="picture (.png; default RUN/complete_MASK.png); the completions go beside it "
                                        "as .npy and the errors into RUN/complete.json")
    complete.add_argument("--seed", type=int, default=0, help="seed of the mask, the start and the chain (default 0)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .config import ConfigError
    from .train import TrainingDiverged

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"dualmcmc {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingDiverged as err:
        print(f"dualmcmc {args.command}: {err}", file=sys.stderr)
        return 3
    except OSError as err:  # a file the command could not write or read (disk full, permissions): one line
        if err.filename is None:
            raise
        print(f"dualmcmc {args.command}: error: {_os_error(err, args.command)}", file=sys.stderr)
        return 2


def _os_error(err: OSError, command: str) -> str:
    """'cannot write PATH (reason); what to do' for an OSError that names its file."""
    import errno

    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
           errno.EACCES: "make it writable", errno.EPERM: "make it writable",
           errno.EROFS: "use a writable file system"}.get(err.errno, "check the path")
    again = "; then run the same command again (training resumes from its last checkpoint)" if command == "train" else ""
    return f"cannot use {err.filename} ({err.strerror}); {fix}{again}"


def _train(args) -> int:
    from .train import train

    run_dir = train(args.config, args.overrides, fresh=args.fresh, interface="cli")
    if os.environ.get("RANK", "0") == "0":  # torchrun: one line, from rank 0
        print(run_dir)
    return 0


def _sample(args) -> int:
    import numpy as np
    import torch

    from .run import CLI, load_run

    if args.n < 1:
        raise _config_error(f"-n must be >= 1, got {args.n}")
    out = Path(args.out) if args.out else Path(args.run) / "samples.npy"
    if out.suffix != ".npy":
        raise _config_error(f"--out must end in .npy, got {str(out)!r}")
    if out.is_dir():
        raise _config_error(f"--out {str(out)!r} is a directory; give a file name ending in .npy")
    method = load_run(args.run, args.device, flags=CLI)
    generator = torch.Generator(device=method.device).manual_seed(args.seed)
    if args.generator_only:
        samples = method.generator_sample(args.n, generator=generator)
        if samples is None:
            raise _config_error(f"--generator-only: method {method.name!r} has no generator")
    else:
        samples = method.sample(args.n, generator=generator)
    array = samples.detach().cpu().float().numpy()
    from .checkpoint import atomic_write_bytes

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out, lambda handle: np.save(handle, array))
    except OSError as err:
        raise _config_error(f"cannot write {out} ({err.strerror}); pass --out PATH.npy in a writable directory") from None
    print(f"{out} {array.shape}")
    try:  # a picture beside the array: a scatter plot for 2-D points, a grid for images
        from . import plotting

        title = f"{method.name} {'generator ' if args.generator_only else ''}samples (n = {args.n})"
        if array.ndim == 2 and array.shape[1] == 2:
            print(plotting.plot_samples_2d(out.with_suffix(".png"), array, title=title))
        elif array.ndim == 4 and array.shape[1] in (1, 3):
            print(plotting.plot_image_grid(out.with_suffix(".png"), array, title=title))
    except ImportError:  # matplotlib is optional
        pass
    except OSError as err:  # the samples are written; only their picture could not be
        print(f"dualmcmc sample: warning: no picture: cannot write {out.with_suffix('.png')} ({err.strerror})",
              file=sys.stderr)
    return 0


def _evaluate(args) -> int:
    from .run import CLI, EVAL_NAME, score_run, write_scores

    scores = score_run(args.run, args.n_samples, args.resolution, args.device, flags=CLI)
    print(json.dumps(scores, indent=2))  # first: a directory that cannot take eval.json does not lose them
    try:
        write_scores(args.run, scores)
    except OSError as err:
        raise _config_error(f"cannot write {Path(args.run) / EVAL_NAME} ({err.strerror}); the scores are printed "
                            f"above; make {args.run} writable to keep them there") from None
    return 0


def _loglik(args) -> int:
    from .checkpoint import atomic_write_text
    from .run import CLI, LOGLIK_NAME, log_likelihood_run

    found = log_likelihood_run(args.run, n_chains=args.n_chains, n_temps=args.n_temps, seed=args.seed,
                               data=args.data, device=args.device, flags=CLI)
    print(json.dumps(found, indent=2))  # first: a directory that cannot take loglik.json does not lose them
    try:
        atomic_write_text(Path(args.run) / LOGLIK_NAME, json.dumps(found, indent=2) + "\n")
    except OSError as err:
        raise _config_error(f"cannot write {Path(args.run) / LOGLIK_NAME} ({err.strerror}); the estimate is printed "
                            f"above") from None
    return 0


def _score(args) -> int:
    import numpy as np

    from .checkpoint import atomic_write_bytes
    from .run import CLI, score_data

    out = Path(args.out) if args.out else Path(args.run) / "scores.npz"
    if out.suffix != ".npz":
        raise _config_error(f"--out must end in .npz, got {str(out)!r}")
    found = score_data(args.run, args.data, device=args.device, flags=CLI)
    arrays = {k: found[k].numpy() for k in ("energy", "log_p") if k in found}
    try:
        atomic_write_bytes(out, lambda handle: np.savez(handle, **arrays))
    except OSError as err:
        raise _config_error(f"cannot write {out} ({err.strerror}); pass --out PATH.npz in a writable directory") from None
    energy = found["energy"]
    summary = {"data": args.data, "n": len(energy), "mean_energy": float(energy.mean()), "out": str(out)}
    if "log_p" in found:
        summary.update(log_z=found["log_z"], mean_log_p=float(found["log_p"].mean()))
    print(json.dumps(summary, indent=2))
    return 0


def _ood(args) -> int:
    from .run import CLI, OOD_NAME, ood_run, record_result

    found = ood_run(args.run, args.out_data, args.in_data, seed=args.seed, device=args.device, flags=CLI)
    print(json.dumps(found, indent=2))
    path = Path(args.run) / OOD_NAME
    try:
        record_result(path, f"{found['in_data']} vs {found['out_data']}", found)
    except OSError as err:
        raise _config_error(f"cannot write {path} ({err.strerror}); the scores are printed above") from None
    return 0


def _interpolate(args) -> int:
    import numpy as np
    import torch

    from .checkpoint import atomic_write_bytes
    from .interpolate import interpolation_codes
    from .run import CLI, load_run

    out = Path(args.out) if args.out else Path(args.run) / f"interpolate_{args.kind}.png"
    if out.suffix != ".png":
        raise _config_error(f"--out must end in .png, got {str(out)!r}")
    method = load_run(args.run, args.device, flags=CLI)
    if method.latent_shape is None:
        raise _config_error(f"{args.run}: method {method.name!r} has no generator, so there is no latent space to "
                            f"interpolate through (dual_mcmc, vae_mcmc, coopnets and nt_ebm have one)")
    try:
        codes = interpolation_codes(method, args.rows, args.steps, args.kind,
                                    generator=torch.Generator(device=method.device).manual_seed(args.seed))
    except ValueError as err:
        raise _config_error(f"--{err}") from None  # "rows must be ..." / "steps must be ...": the flag's name
    decoded = method.decode(codes).cpu().float().numpy()
    try:
        atomic_write_bytes(out.with_suffix(".npy"), lambda handle: np.save(handle, decoded))
        from . import plotting

        print(plotting.plot_interpolations(out, decoded, args.rows, args.steps,
                                           title=f"{method.name}: {args.kind} interpolation"))
    except ImportError:
        print(f"{out.with_suffix('.npy')} (matplotlib is not installed: no picture)")
    except OSError as err:
        raise _config_error(f"cannot write {out} ({err.strerror}); pass --out PATH.png in a writable directory") from None
    return 0


def _complete(args) -> int:
    import numpy as np

    from .checkpoint import atomic_write_bytes
    from .run import CLI, completion_run, record_result

    name = args.mask.replace(":", "")
    out = Path(args.out) if args.out else Path(args.run) / f"complete_{name}.png"
    if out.suffix != ".png":
        raise _config_error(f"--out must end in .png, got {str(out)!r}")
    found = completion_run(args.run, args.mask, data=args.data, n=args.n, steps=args.steps, seed=args.seed,
                           device=args.device, flags=CLI)
    arrays = {k: found.pop(k).cpu().numpy() for k in ("truth", "observed_mask", "start", "completed")}
    print(json.dumps(found, indent=2))
    try:
        record_result(Path(args.run) / "complete.json", f"{found['data']} {args.mask}", found)
        atomic_write_bytes(out.with_suffix(".npy"), lambda handle: np.save(handle, arrays["completed"]))
        from . import plotting

        print(plotting.plot_completion(out, arrays, title=f"{found['method']}: {args.mask} missing"))
    except ImportError:
        pass  # no matplotlib: the numbers and the array are written
    except OSError as err:
        raise _config_error(f"cannot write into {args.run} or {out} ({err.strerror}); the errors are printed above; "
                            f"pass --out PATH.png in a writable directory") from None
    return 0


def _config_error(message: str):
    from .config import ConfigError

    return ConfigError(message)


COMMANDS = {"train": _train, "sample": _sample, "evaluate": _evaluate, "loglik": _loglik, "score": _score,
            "ood": _ood, "interpolate": _interpolate, "complete": _complete}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
