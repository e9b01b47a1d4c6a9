"""Open an export folder for running: manifest verified (``ternarylm.format.folder.ModelFolder``),
config.json read and checked against the graph (``ternarylm.format.folder.check_graph``), tokenizer
loaded, and either engine built from it.

Errors are ``FolderError`` / ``InvalidPackedWeights`` / ``ValueError`` with one line that names the
file and the fix; ``ternary-run`` prints them as they are.
"""

from __future__ import annotations

from pathlib import Path

from ternarylm.format.architecture import ModelConfig
from ternarylm.format.encoding import EncodingSpec
from ternarylm.format.entries import CAUSAL_LM, SEQUENCE_CLASSIFICATION
from ternarylm.format.folder import FolderError, ModelFolder, check_format, check_graph
from ternarylm.format.targets import fused_attention
from ternarylm.onnxrt.decoder import OrtDecoder
from ternarylm.onnxrt.session import SessionSettings
from ternarylm.runtime_py.model import NumpyDecoder
from ternarylm.runtime_py.weights import check_packed


def open_folder(path, verify: bool = True) -> ModelFolder:
    """The folder with every file's size and sha256 checked against manifest.json (unless ``verify=False``)."""
    folder = ModelFolder.open(path, verify=verify)
    cfg = folder.config
    if not cfg:
        raise FolderError(f"{folder.path}: no config.json; re-export the model")
    check_format(cfg, folder.path / "config.json")
    return folder


def _folder(path_or_folder, verify: bool) -> ModelFolder:
    return path_or_folder if isinstance(path_or_folder, ModelFolder) else open_folder(path_or_folder, verify)


def load_config(path_or_folder, verify: bool = True, graph=None) -> ModelConfig:
    """config.json's architecture, checked against model.onnx for a language model (``graph``: the
    already-read ModelProto, else its graph is read here without the weights)."""
    folder = _folder(path_or_folder, verify)
    config = ModelConfig.from_config_json(folder.config)
    if folder.kind == CAUSAL_LM:
        if graph is None:
            graph = _read_onnx(folder.model_path, load_external_data=False)
        check_graph(folder, graph)
    return config


def load_tokenizer(path_or_folder, verify: bool = True):
    """The folder's ``tokenizer.json`` as a ``tokenizers.Tokenizer``."""
    from tokenizers import Tokenizer

    folder = _folder(path_or_folder, verify)
    path = folder.path / "tokenizer.json"
    if not path.is_file():
        raise FolderError(f"{folder.path}: no tokenizer.json; re-export the model (ternary-export writes one)")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        raise FolderError(f"{path}: not a tokenizers JSON file ({str(e).splitlines()[0][:200]}); "
                          "re-export the model") from None


def _read_onnx(path: Path, load_external_data: bool = True):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except (DecodeError, ValueError, OSError) as e:
        raise FolderError(f"{path}: not a readable ONNX model ({str(e).splitlines()[0][:200]}); "
                          "re-export the model") from None


def _require_kind(folder: ModelFolder, kind: str) -> ModelFolder:
    found = folder.kind
    if found != kind:
        fix = ("load it with load_classifier (or ternary-finetune predict)" if found == SEQUENCE_CLASSIFICATION
               else "load it with load_numpy / load_ort (or ternary-run)")
        raise FolderError(f"{folder.path} holds a {found} export, not a {kind} one; {fix}")
    return folder


def load_numpy(path_or_folder, verify: bool = True) -> NumpyDecoder:
    """The NumPy engine over a folder's model.onnx (weights unpacked once, here)."""
    folder = _require_kind(_folder(path_or_folder, verify), CAUSAL_LM)
    model = _read_onnx(folder.model_path)
    check_graph(folder, model)  # config.json must describe this graph
    return NumpyDecoder.from_onnx(model, folder.config)


def check_weights(path_or_folder, verify: bool = True):
    """Decode every ternary weight once and drop it: raises ``InvalidPackedWeights`` for packed codes
    that are not trits (onnxruntime would silently compute with them). The NumPy engine checks at load."""
    folder = _folder(path_or_folder, verify)
    check_packed(_read_onnx(folder.model_path), folder.config.get("weights") or {})


def load_ort(path_or_folder, verify: bool = True, check_packed: bool = False, kv_cache: str = "auto",
             max_length: int | None = None, **session_options) -> OrtDecoder:
    """The onnxruntime engine; ``kv_cache`` / ``max_length``: see ``OrtDecoder`` (``auto``: in place on
    the fused graph of the ORT targets); ``session_options``: providers, provider_options, threads,
    session_config, log_severity, graph_optimization (see ``SessionSettings.from_options``)."""
    folder = _require_kind(_folder(path_or_folder, verify), CAUSAL_LM)
    if check_packed:
        check_weights(folder)
    settings = SessionSettings.from_options(folder.model_path, **session_options)
    return ort_decoder(folder, settings, load_config(folder), kv_cache=kv_cache, max_length=max_length)


def ort_decoder(folder: ModelFolder, settings: SessionSettings, config: ModelConfig, **options) -> OrtDecoder:
    """An ``OrtDecoder`` for ``folder`` with ``settings`` (a device profile's or ``load_ort``'s)."""
    return OrtDecoder(settings.create_session(), config, fused_attention=fused_attention(folder.config), **options)


def load_engine(path, engine: str = "ort", verify: bool = True, **options):
    """``load_ort`` or ``load_numpy`` by name."""
    if engine == "numpy":
        return load_numpy(path, verify)
    if engine == "ort":
        return load_ort(path, verify, **options)
    raise ValueError(f"unknown engine {engine!r}; use ort or numpy")


def load_classifier(path_or_folder, engine: str = "ort", verify: bool = True, check_packed: bool = True,
                    batch_size: int = 32, **session_options):
    """A ``TextClassifier`` over a classifier export folder: ``predict(texts or (text1, text2) pairs)``
    -> ``(N, num_labels)`` probabilities, tokenized with the folder's tokenizer and encoding spec.
    ``engine``: ``ort`` (``session_options`` as for ``load_ort``) or ``numpy``."""
    from ternarylm.runtime_py.classifier import NumpyClassifier, OrtClassifier, TextClassifier

    folder = _require_kind(_folder(path_or_folder, verify), SEQUENCE_CLASSIFICATION)
    cfg = folder.config
    try:
        spec = EncodingSpec.from_dict(cfg.get("encoding"))
    except (TypeError, ValueError) as e:
        raise FolderError(f"{folder.path / 'config.json'}: bad encoding spec ({e}); re-export the classifier") from None
    labels = [str(cfg.get("id2label", {}).get(str(i), i)) for i in range(int(cfg.get("num_labels") or 0))]
    if len(labels) < 2:
        raise FolderError(f"{folder.path / 'config.json'}: num_labels must be 2 or more; re-export the classifier")
    if engine == "numpy":
        model = NumpyClassifier.from_onnx(_read_onnx(folder.model_path), cfg)
    elif engine == "ort":
        if check_packed:
            check_weights(folder)
        model = OrtClassifier(SessionSettings.from_options(folder.model_path, **session_options).create_session())
    else:
        raise ValueError(f"unknown engine {engine!r}; use ort or numpy")
    return TextClassifier(model, load_tokenizer(folder), spec, labels, batch_size=batch_size)
