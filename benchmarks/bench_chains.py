"""Langevin chains and one Dual-MCMC iteration: the reference-style eager loop against the fused op, CUDA graphs and
torch.compile.

    python benchmarks/bench_chains.py                  # full sizes on CUDA; on CPU the full 2-D row and a reduced
                                                       # CIFAR-10 row (width 64, 16 chains: the full nets at 100
                                                       # chains take many seconds per step on two cores)
    python benchmarks/bench_chains.py --quick          # tiny sizes, seconds on a CPU (CI)
    python benchmarks/bench_chains.py --json out.json  # also write the rows as JSON

Chains: a 30-step data-space chain (EBM) and a 10-step latent chain (generator posterior) for
  * mlp2d:   MLPEnergy(2, 256, 3) / MLPGenerator(8, 2, 256, 3), 10,000 chains;
  * cifar10: the reference CIFAR-10 EBM / generator (make_energy / make_generator "cifar10", width 512), 100 chains;
each run five ways:
  reference     the Dual-MCMC code's loop (docs/methods.md §2.3): autograd.grad, then x.data updates and randn_like
  fused         dualmcmc.samplers chains (the fused in-place op)
  fused+graph   the same chain captured once into a CUDA graph and replayed (CUDA only)
  fused+compile the network through accel.fast_forward(compile=True, input_grads_only=True), as the methods do
  all           graph + compile + bf16 autocast + channels_last (CUDA only)
and the floor: K bare forward+backward passes of the network (no update), which no chain can beat.
"vs reference" is the speed-up over the reference loop; "vs floor" is steps/s over the floor's passes/s (1.0 = only
the network's own cost remains).

Iteration: one Dual-MCMC iteration on the CIFAR-10 nets (batch 100, 30 / 30 / 10 steps, G -> I -> E), a
reference-style transcription of docs/methods.md §2.2 against dualmcmc.methods.build_method("dual_mcmc", ...), plain and
with the config's speed options (cuda_graph / compile / autocast bf16 / channels_last, where they can run).

Timing: warm-up runs first (they also capture graphs and compile), then the median of repeats, the modes taking
turns so that a slow spell of a shared machine falls on all of them; torch.cuda.synchronize around every timed call on
CUDA.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))  # this checkout's dualmcmc
from dualmcmc import nets, samplers  # noqa: E402
from dualmcmc.accel import fast_forward  # noqa: E402
from dualmcmc.methods import build_method  # noqa: E402

MODES = ("reference", "fused", "fused+graph", "fused+compile", "all", "floor")
GPU_ONLY = ("fused+graph", "all")
COMPILED = ("fused+compile", "all")


@dataclass
class Setting:
    """One network family at one size."""

    name: str
    n_chains: int
    x_steps: int
    z_steps: int
    width: int
    note: str = ""

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (2,) if self.name == "mlp2d" else (3, 32, 32)

    @property
    def latent_dim(self) -> int:
        return 8 if self.name == "mlp2d" else 128

    @property
    def x_step(self) -> tuple[float, float]:
        return (0.05, 1e-3) if self.name == "mlp2d" else (0.5, 1e-3)  # drift step, noise (cold chain, §2.4)

    def build(self, device: str) -> tuple[nn.Module, nn.Module]:
        if self.name == "mlp2d":
            energy, generator = nets.MLPEnergy(2, self.width, 3), nets.MLPGenerator(self.latent_dim, 2, self.width, 3)
        else:
            energy = nets.make_energy("cifar10", self.data_shape, self.width)
            generator = nets.make_generator("cifar10", self.data_shape, self.latent_dim, self.width)
        return energy.to(device).train(), generator.to(device).train()


Z_STEP, Z_NOISE, SIGMA = 0.1, 0.1, 0.3  # latent chain, reference values (docs/methods.md §2.4)


def settings(device: str, quick: bool) -> list[Setting]:
    if quick:
        return [Setting("mlp2d", 1000, 10, 5, 256, "quick"), Setting("cifar10", 4, 5, 3, 32, "quick: width 32")]
    if device == "cuda":
        return [Setting("mlp2d", 10_000, 30, 10, 256), Setting("cifar10", 100, 30, 10, 512)]
    return [Setting("mlp2d", 10_000, 30, 10, 256), Setting("cifar10", 16, 30, 10, 64, "CPU: width 64, 16 chains")]


# ---- the reference code's chains, as written in jcui1224/dual-MCMC train.py (docs/methods.md §2.3) -------------------
def reference_langevin_x(netE, x, steps, step_size, noise_std):
    x = x.clone().detach()
    x.requires_grad = True
    for _ in range(steps):
        g = torch.autograd.grad(netE(x).sum(), x)[0]
        x.data = x.data - 0.5 * step_size**2 * g
        x.data = x.data + noise_std * torch.randn_like(x)
    return x.detach()


def reference_langevin_z(netG, z, x, steps, step_size, noise_std, sig=SIGMA, prior_sig=1.0):
    z = z.clone().detach()
    z.requires_grad = True
    for _ in range(steps):
        err = ((netG(z) - x) ** 2).sum()
        g = torch.autograd.grad(err, z)[0]
        z.data = z.data - 0.5 * step_size**2 * (g / sig**2 + z.data / prior_sig**2) + noise_std * torch.randn_like(z)
    return z.detach()


# ---- the ways to run a chain ------------------------------------------------------------------------------------
def data_chain(mode: str, energy: nn.Module, steps: int, step: float, noise: float) -> Callable[[Tensor], object]:
    if mode == "reference":
        return lambda x0: reference_langevin_x(energy, x0, steps, step, noise)
    if mode == "floor":
        def passes(x0):
            leaf = x0.detach().requires_grad_(True)
            for _ in range(steps):
                torch.autograd.grad(energy(leaf).sum(), leaf)
        return passes
    fn = energy
    if mode == "fused+compile":
        fn = fast_forward(energy, compile=True, input_grads_only=True)
    elif mode == "all":
        fn = fast_forward(energy, compile=True, autocast="bf16", channels_last=True, input_grads_only=True)
    graph = mode in GPU_ONLY
    return lambda x0: samplers.langevin_data_chain(fn, x0, steps, step, noise, cuda_graph=graph)


def latent_chain(mode: str, generator: nn.Module, steps: int) -> Callable[[Tensor, Tensor], object]:
    if mode == "reference":
        return lambda z0, x: reference_langevin_z(generator, z0, x, steps, Z_STEP, Z_NOISE)
    if mode == "floor":
        def passes(z0, x):
            leaf = z0.detach().requires_grad_(True)
            for _ in range(steps):
                torch.autograd.grad(((generator(leaf) - x) ** 2).sum(), leaf)
        return passes
    fn = generator
    if mode == "fused+compile":
        fn = fast_forward(generator, compile=True, input_grads_only=True)
    elif mode == "all":
        fn = fast_forward(generator, compile=True, autocast="bf16", channels_last=True,
                          input_grads_only=True)
    graph = mode in GPU_ONLY
    return lambda z0, x: samplers.langevin_latent_chain(fn, z0, x, steps, Z_STEP, Z_NOISE, sigma=SIGMA,
                                                        cuda_graph=graph)


def timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved_medians(runs: dict[str, Callable[[], object]], device: str, warmup: int,
                        repeats: int) -> tuple[dict[str, float], dict[str, str]]:
    """Median seconds of each run, timed in turn (one repeat of each, then the next), so that a slow spell of a
    shared machine falls on every mode alike; and the error of each run that failed (compile, capture)."""
    failed: dict[str, str] = {}
    for name, fn in runs.items():
        try:
            for _ in range(warmup):  # also compiles and captures
                fn()
        except Exception as err:  # a backend that cannot compile or capture here: say so, keep going
            failed[name] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
    times: dict[str, list[float]] = {name: [] for name in runs if name not in failed}
    for _ in range(repeats):
        for name in times:
            times[name].append(timed(runs[name], device))
    return {name: statistics.median(t) for name, t in times.items()}, failed


def skip_reason(mode: str, device: str, compile_on: bool) -> Optional[str]:
    if mode in GPU_ONLY and device != "cuda":
        return "skipped: needs CUDA"
    if mode in COMPILED and not compile_on:
        return "skipped: compile off (--quick on CPU; --compile on to run it)"
    return None


def chain_rows(setting: Setting, device: str, compile_on: bool, warmup: int, repeats: int) -> list[dict]:
    rows = []
    energy, generator = setting.build(device)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(setting.n_chains, *setting.data_shape, generator=gen).to(device)
    z0 = torch.randn(setting.n_chains, setting.latent_dim, generator=gen).to(device)
    x_data = torch.rand(setting.n_chains, *setting.data_shape, generator=gen).mul(2).sub(1).to(device)
    for chain, steps in (("data", setting.x_steps), ("latent", setting.z_steps)):
        runs: dict[str, Callable[[], object]] = {}
        for mode in MODES:
            if skip_reason(mode, device, compile_on) is None:
                # each mode gets its own copy: channels_last converts weights and compile wraps the module
                if chain == "data":
                    run = data_chain(mode, copy.deepcopy(energy), steps, *setting.x_step)
                    runs[mode] = lambda run=run: run(x0)
                else:
                    run = latent_chain(mode, copy.deepcopy(generator), steps)
                    runs[mode] = lambda run=run: run(z0, x_data)
        times, failed = interleaved_medians(runs, device, warmup, repeats)
        for mode in MODES:
            row = dict(device=device, torch=torch.__version__, setting=setting.name, chain=chain,
                       chains=setting.n_chains, steps=steps, mode=mode,
                       note=skip_reason(mode, device, compile_on) or failed.get(mode) or setting.note)
            if mode in times:
                row.update(seconds=times[mode], steps_per_s=steps / times[mode])
                if "reference" in times:
                    row["vs_reference"] = times["reference"] / times[mode]
                if "floor" in times:
                    row["vs_floor"] = times["floor"] / times[mode]
            rows.append(row)
    return rows


# ---- one Dual-MCMC iteration --------------------------------------------------------------------------------------
def diag_normal_nll(z, mu, logvar):
    return 0.5 * logvar.sum(1) + 0.5 * ((z - mu) ** 2 / (1e-6 + torch.exp(logvar))).sum(1)


class ReferenceIteration:
    """docs/methods.md §2.2 written out as a researcher would: G step, I step, E step, on the package's CIFAR-10 nets."""

    def __init__(self, device: str, width: int, encoder_width: int, x_steps: int, z_steps: int):
        shape = (3, 32, 32)
        self.nz, self.x_steps, self.z_steps = 128, x_steps, z_steps
        self.netG = nets.make_generator("cifar10", shape, self.nz, width).to(device)
        self.netE = nets.make_energy("cifar10", shape, width).to(device)
        self.netI = nets.make_encoder("cifar10", shape, self.nz, encoder_width).to(device)
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=3e-4, betas=(0.0, 0.9), weight_decay=5e-4)
        self.optI = torch.optim.Adam(self.netI.parameters(), lr=1e-4, betas=(0.0, 0.9), weight_decay=5e-4)
        self.optE = torch.optim.Adam(self.netE.parameters(), lr=1e-4, betas=(0.0, 0.9))
        self.e_l_step_size, self.e_n_step_size = 0.5, 1e-3
        self.mcmc_temp = (self.e_n_step_size / self.e_l_step_size) ** 2

    def langevin_x(self, x):
        return reference_langevin_x(self.netE, x, self.x_steps, self.e_l_step_size, self.e_n_step_size)

    def __call__(self, x: Tensor) -> None:
        B = x.shape[0]
        # G step
        z0 = torch.randn(B, self.nz, device=x.device)
        x0 = self.netG(z0)
        x_t = self.langevin_x(x0)
        self.optG.zero_grad()
        mu, logvar = self.netI(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        z_t = reference_langevin_z(self.netG, z, x, self.z_steps, Z_STEP, Z_NOISE)
        errRecon = ((self.netG(z_t.detach()) - x) ** 2).sum() / B
        errSample = ((x0 - x_t) ** 2).sum() / B
        errG = 1.0 * errRecon + 50 * errSample
        errG.backward()
        self.optG.step()
        # I step
        self.optI.zero_grad()
        neg_log_q_z = diag_normal_nll(z_t.detach(), mu, logvar).mean()
        mu_g, logvar_g = self.netI(x_t)
        errLatent = diag_normal_nll(z0.detach(), mu_g, logvar_g).mean()
        errI = 1.0 * neg_log_q_z + 0.1 * errLatent
        errI.backward()
        self.optI.step()
        # E step
        self.optE.zero_grad()
        E_T = self.netE(x).mean()
        x0b = self.langevin_x(self.netG(z0))
        E_F = self.netE(x0b.detach()).mean()
        errE = E_T - E_F
        (errE / self.mcmc_temp).backward()
        self.optE.step()
        if abs(errE.item()) > 1e4 or math.isnan(errE.item() + errG.item() + errI.item()):  # the reference's guard
            raise RuntimeError("reference iteration exploded")


def iteration_variants(device: str, compile_on: bool) -> list[tuple[str, dict]]:
    """(mode, speed options of the method's config) for the iteration rows that can run on ``device``."""
    variants = [("dual_mcmc (fused)", {})]
    if device == "cuda":
        variants.append(("dual_mcmc (fused+graph)", {"cuda_graph": True}))
    if compile_on:
        variants.append(("dual_mcmc (fused+compile)", {"compile": True}))
    if device == "cuda" and compile_on:
        variants.append(("dual_mcmc (all)", {"cuda_graph": True, "compile": True, "autocast": "bf16",
                                             "channels_last": True}))
    return variants


def iteration_rows(device: str, quick: bool, compile_on: bool, warmup: int, repeats: int) -> list[dict]:
    if quick:
        batch, width, enc, x_steps, z_steps, note = 4, 32, 32, 5, 3, "quick: width 32, batch 4, 5/5/3 steps"
    elif device == "cuda":
        batch, width, enc, x_steps, z_steps, note = 100, 512, 128, 30, 10, ""
    else:
        batch, width, enc, x_steps, z_steps, note = 16, 64, 32, 30, 10, "CPU: width 64 / encoder 32, batch 16"
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 32, 32).mul(2).sub(1).to(device)
    base = dict(device=device, torch=torch.__version__, setting="cifar10", chain="iteration", chains=batch,
                steps=f"{x_steps}/{x_steps}/{z_steps}")
    rows = []
    runs: dict[str, Callable[[], object]] = {}
    reference = ReferenceIteration(device, width, enc, x_steps, z_steps)
    runs["reference"] = lambda: reference(x)
    params = {"arch": "cifar10", "latent_dim": 128, "ebm_hidden": width, "generator_hidden": width,
              "encoder_hidden": enc, "x_step_size": 0.5, "x_noise_std": 1e-3, "x_steps": x_steps, "z_steps": z_steps,
              "chain_diagnostics": False}
    notes = {"reference": note}
    for mode, speed in iteration_variants(device, compile_on):
        notes[mode] = (note + "; " if note else "") + "chain_diagnostics off, as the reference"
        try:
            torch.manual_seed(0)
            method = build_method("dual_mcmc", {**params, **speed}, (3, 32, 32)).to(device)
            runs[mode] = lambda method=method: method.train_step(x)
        except Exception as err:
            notes[mode] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    times, failed = interleaved_medians(runs, device, warmup, repeats)
    for mode in notes:
        row = dict(base, mode=mode, note=failed.get(mode) or notes[mode])
        if mode in times:
            row["seconds"] = times[mode]
            if mode != "reference" and "reference" in times:
                row["vs_reference"] = times["reference"] / times[mode]
        rows.append(row)
    return rows


# ---- output -------------------------------------------------------------------------------------------------------
def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_header() -> None:
    print("| device | torch | setting | chain | chains | steps | mode | steps/s | s/iter | vs reference | vs floor "
          "| note |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        per_iter = r.get("seconds") if r["chain"] == "iteration" else None
        print(f"| {r['device']} | {r['torch']} | {r['setting']} | {r['chain']} | {r['chains']} | {r['steps']} | "
              f"{r['mode']} | {fmt(r.get('steps_per_s'), '.1f')} | {fmt(per_iter, '.3f')} | "
              f"{fmt(r.get('vs_reference'), '.2f')} | {fmt(r.get('vs_floor'), '.2f')} | {r.get('note') or ''} |",
              flush=True)


def main(argv: Optional[list[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one warm-up and three repeats (CI)")
    parser.add_argument("--devices", default=None, help="comma list; default: cuda when available, else cpu")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="torch.compile modes; auto = on, except --quick on CPU (compiling takes minutes there)")
    parser.add_argument("--no-iteration", action="store_true", help="skip the full Dual-MCMC iteration rows")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for CPU runs")
    parser.add_argument("--json", default=None, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = args.devices.split(",") if args.devices else ["cuda" if torch.cuda.is_available() else "cpu"]
    for device in devices:
        if device not in ("cpu", "cuda") or (device == "cuda" and not torch.cuda.is_available()):
            parser.error(f"--devices: {device!r} is not available here (cpu, or cuda on a CUDA machine)")
    warmup, repeats = (1, 3) if args.quick else (2, 5)
    print(f"# bench_chains: torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads" + (f", {torch.cuda.get_device_name()}" if "cuda" in devices else ""))
    print_header()
    rows: list[dict] = []
    for device in devices:
        compile_on = args.compile == "on" or (args.compile == "auto" and not (args.quick and device == "cpu"))
        groups = [lambda s=s: chain_rows(s, device, compile_on, warmup, repeats) for s in settings(device, args.quick)]
        if not args.no_iteration:
            groups.append(lambda: iteration_rows(device, args.quick, compile_on, 1, 2 if args.quick else 3))
        for group in groups:
            torch.manual_seed(0)
            new = group()
            print_rows(new)
            rows += new
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
