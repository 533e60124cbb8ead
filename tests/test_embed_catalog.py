"""Catalog embedding on Ray Data: MiniLM text vectors, and ViT image vectors from local weights."""

import numpy as np
import pandas as pd
import pytest

from recsys.raycluster import ensure_ray
from recsys.train.embed_catalog import content_matrix, embed_items
from tests.conftest import make_cfg


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory):
    """A tiny random ViT saved locally: the code path of the real ViT-B/16 without any download."""
    import timm
    from PIL import Image
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("vit")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    save_file(model.state_dict(), str(folder / "vit_tiny.safetensors"))
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = (rng.random((64, 48, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"item{i}.png")
    return folder


def test_text_and_image_vectors(tiny_vit):
    cfg = make_cfg("embedding.image_model=vit_tiny_patch16_224",
                   f"embedding.image_weights={tiny_vit / 'vit_tiny.safetensors'}")
    ensure_ray(cfg)
    items = pd.DataFrame({
        "sku": ["A", "B", "C", "D"],
        "spec_text": ["USB-C charger 65 W", "USB-C charger 30 W", "OLED TV 65 inch", "phone case"],
        "image_uri": [str(tiny_vit / "item0.png"), str(tiny_vit / "item1.png"), None, str(tiny_vit / "item2.png")],
    })
    parts = embed_items(items, cfg.embedding)
    assert list(parts["text"]["sku"]) == ["A", "B", "C", "D"]
    text = np.stack(parts["text"]["vector"])
    assert text.shape == (4, 384) and np.allclose(np.linalg.norm(text, axis=1), 1, atol=1e-5)
    assert text[0] @ text[1] > text[0] @ text[2]          # chargers closer to chargers than to a TV
    assert list(parts["image"]["sku"]) == ["A", "B", "D"] and len(parts["image"]["vector"].iloc[0]) == 192
    both = content_matrix(parts, ["A", "B", "C", "D"])
    assert both.shape == (4, 384 + 192) and np.allclose(np.linalg.norm(both, axis=1), 1, atol=1e-5)
    assert np.allclose(both[2, 384:], 0)                  # no image: text only


def test_missing_weights_mean_text_only():
    cfg = make_cfg()
    ensure_ray(cfg)
    items = pd.DataFrame({"sku": ["A"], "spec_text": ["a cable"], "image_uri": ["/nowhere.png"]})
    assert set(embed_items(items, cfg.embedding)) == {"text"}
