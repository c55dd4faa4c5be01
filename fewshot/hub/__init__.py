"""References to pretrained checkpoints -> verified local fewshot bundles.

A reference is one of:

- a registry name (``ffhq256``; ``presets/checkpoints.toml`` plus ``FEWSHOT_CHECKPOINT_REGISTRY``),
- ``hf://org/repo/path/to/file[@revision]`` (``hf://datasets/org/repo/...`` for dataset repos),
  fetched with ``huggingface_hub.hf_hub_download`` into the standard HF cache,
- an ``http(s)://`` URL, downloaded with resume support into ``settings.checkpoints_dir()/downloads``,
- a local file.

Official pickles are converted once to a safetensors bundle under
``settings.checkpoints_dir()/converted/<sha256 of the pickle>.safetensors``; later calls (online or
offline) return that file. A local safetensors bundle is returned as it is.

The package has four parts: ``registry`` (the checkpoint names and the cache's hash records), ``fetch``
(downloads and hf:// references, and the one error a failed fetch ends in), ``checkpoints`` (a reference ->
a verified local bundle) and ``publish`` (model card and push). Their public names are all here.
"""

from __future__ import annotations

from .checkpoints import (
    converted_path,
    ensure_bundle,
    fetch_checkpoint_source,
    is_url,
    resolve_checkpoint,
)
from .fetch import (
    CONNECT_TIMEOUT_S,
    DNS_TIMEOUT_S,
    FEWSHOT_CACHE_NOTE,
    HF_CACHE_NOTE,
    OFFLINE_REASON,
    FetchError,
    HubFileRef,
    download_url,
    hf_cache_folder,
    hf_download,
    hf_file_url,
    parse_hf_ref,
    suggesting,
    unreachable_reason,
    url_cache_path,
)
from .publish import (
    BUNDLE_CANDIDATES,
    PushSource,
    find_push_source,
    model_card_fields,
    prepare_push_folder,
    push_to_hub,
    render_model_card,
    sample_grid,
)
from .registry import (
    CHECKPOINT_REGISTRY_FILE,
    DOWNLOAD_CHUNK,
    CheckpointEntry,
    cached_sha256,
    checkpoint_registry,
    hash_matches,
    read_toml_registry,
    registry_entry_for,
    remove_cached,
    sha256_of,
    write_hash_record,
)

__all__ = [
    "BUNDLE_CANDIDATES",
    "CHECKPOINT_REGISTRY_FILE",
    "CONNECT_TIMEOUT_S",
    "CheckpointEntry",
    "DNS_TIMEOUT_S",
    "DOWNLOAD_CHUNK",
    "FEWSHOT_CACHE_NOTE",
    "FetchError",
    "HF_CACHE_NOTE",
    "HubFileRef",
    "OFFLINE_REASON",
    "PushSource",
    "cached_sha256",
    "checkpoint_registry",
    "converted_path",
    "download_url",
    "ensure_bundle",
    "fetch_checkpoint_source",
    "find_push_source",
    "hash_matches",
    "hf_cache_folder",
    "hf_download",
    "hf_file_url",
    "is_url",
    "model_card_fields",
    "parse_hf_ref",
    "prepare_push_folder",
    "push_to_hub",
    "read_toml_registry",
    "registry_entry_for",
    "remove_cached",
    "render_model_card",
    "resolve_checkpoint",
    "sample_grid",
    "sha256_of",
    "suggesting",
    "unreachable_reason",
    "url_cache_path",
    "write_hash_record",
]
