"""A synthetic electronics catalog: devices, the accessories and parts that fit them, and the fit graph.

The tables at the top are the whole world: families, device categories (brands, naming, variant
axes, specs), accessory/part categories (how they fit a device) and price/margin ranges. The
generator below only draws from them, deterministically by seed, and scales to any size.

Fit rules (an edge goes from a device SKU to an accessory/part SKU that fits it):
  model      fits every variant of one device model (a case for the "Nova X12 Pro")
  brand      fits every device of one brand in the target categories (a TV remote)
  spec:K     fits target devices whose spec K equals the accessory's (a lens for one mount)
  spec:K=V   same, with the value fixed by the category (a USB-C charger: port=usb-c)
  any        fits every device of the target categories (a tripod)
Camera filters also fit, more loosely, the cameras whose mount takes a lens of that thread size.
Exact-model fits are all listed; of the generic ones, each device lists at most `generic_per_device`
per category (all 150 USB-C cables under every USB-C phone would make the graph quadratic in size).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from itertools import product
from typing import NamedTuple

import numpy as np
import pandas as pd

ITEM_COLUMNS = [
    "sku", "title", "family", "category", "category_path", "kind", "brand", "price", "margin",
    "price_band", "specs", "spec_text", "image_uri", "launch_date", "stock",
]
EDGE_COLUMNS = ["src_sku", "dst_sku", "kind", "weight"]


@dataclass
class Catalog:
    """Items (one row per SKU, ITEM_COLUMNS) and the device -> accessory/part fit graph (EDGE_COLUMNS)."""

    items: pd.DataFrame
    edges: pd.DataFrame


# --------------------------------------------------------------------------------------------
# World tables
# --------------------------------------------------------------------------------------------

class Family(NamedTuple):
    label: str                  # first level of category_path
    share: float                # share of all SKUs
    accessory_brands: tuple     # third-party brands; device makers also sell their own accessories


FAMILIES = {
    "phones":     Family("Phones",     0.20, ("Shieldo", "Voltix", "Cordly", "Armorline")),
    "laptops":    Family("Laptops",    0.12, ("Portly", "Deskwise", "Keyform", "Sleevo")),
    "tablets":    Family("Tablets",    0.09, ("Shieldo", "Foliant", "Scribe")),
    "tvs":        Family("TVs",        0.08, ("Mountix", "Linkwire", "Sonora")),
    "audio":      Family("Audio",      0.12, ("Tipfit", "Padwell", "Cordly")),
    "wearables":  Family("Wearables",  0.10, ("Strapco", "Bandwell", "Shieldo")),
    "cameras":    Family("Cameras",    0.11, ("Optika", "Filtr", "Sturdi", "Cardex")),
    "gaming":     Family("Gaming",     0.08, ("Padforge", "Headshot", "Gamr")),
    "smart_home": Family("Smart Home", 0.10, ("Brightly", "Plugwise", "Purea")),
}

COLOURS_PHONE = ("Midnight", "Starlight", "Blue", "Green", "Red")
COLOURS_BASIC = ("Black", "White", "Silver", "Blue")


class Device(NamedTuple):
    family: str
    label: str                  # second level of category_path
    median_price: float         # median of a base model, before variant upgrades
    share: float                # share of the family's device SKUs
    brands: tuple
    lines: tuple                # model name = brand + line + number + tier
    tiers: tuple
    axes: tuple                 # (spec key, values, price step per value, title format): one SKU per combination
    specs: dict                 # spec key -> choices per model (None = the model lacks it)


DEVICES = {
    "phone": Device("phones", "Smartphones", 699, 1.0, ("Nova", "Orbit", "Kestrel", "Lumen", "Aurel", "Zenta"),
                    ("X", "A", "S"), ("", "", "Pro", "Max", "Lite", "Plus"),
                    (("storage", ("128GB", "256GB", "512GB", "1TB"), 0.15, "{}"), ("colour", COLOURS_PHONE, 0.0, "{}")),
                    {"screen_in": (6.1, 6.3, 6.7, 6.9), "port": ("usb-c",), "qi": ("yes", "no"),
                     "card_slot": ("microSD", None, None)}),
    "laptop": Device("laptops", "Laptops", 1099, 1.0, ("Vantage", "Altura", "Kestrel", "Nimbus", "Aurel"),
                     ("Book ", "Air ", "Zen ", "Blade "), ("", "", "Pro", "Ultra"),
                     (("memory", ("8GB/256GB", "16GB/512GB", "32GB/1TB"), 0.25, "{}"),
                      ("colour", ("Silver", "Space Grey", "Black"), 0.0, "{}")),
                     {"screen_in": (13, 14, 15, 16), "port": ("usb-c",), "hdmi": ("yes", None)}),
    "tablet": Device("tablets", "Tablets", 499, 1.0, ("Nova", "Aurel", "Kestrel", "Orbit"),
                     ("Tab ", "Pad "), ("", "", "Pro", "Mini", "Air"),
                     (("storage", ("64GB", "128GB", "256GB", "512GB"), 0.15, "{}"), ("colour", COLOURS_BASIC, 0.0, "{}")),
                     {"screen_in": (8.3, 10.9, 11.0, 12.9), "port": ("usb-c",)}),
    "tv": Device("tvs", "Televisions", 799, 1.0, ("Strata", "Lumen", "Kyoto", "Helix"),
                 ("QX", "OLED ", "U"), ("", "", "Pro", "Max"),
                 (("screen_in", (43, 50, 55, 65, 75, 85), 0.3, '{}"'),),
                 {"hdmi": ("yes",), "panel": ("LED", "QLED", "OLED")}),
    "earbuds": Device("audio", "Earbuds", 149, 0.55, ("Sonex", "Auralis", "Beatline", "Tunek"),
                      ("Buds ", "Pods ", "Air "), ("", "", "Pro", "Sport"),
                      (("colour", COLOURS_BASIC, 0.0, "{}"),),
                      {"port": ("usb-c",), "qi": ("yes", "no"), "anc": ("yes", "no")}),
    "headphones": Device("audio", "Headphones", 249, 0.45, ("Sonex", "Auralis", "Beatline", "Tunek"),
                         ("H", "Studio ", "Over "), ("", "", "Pro", "Max"),
                         (("colour", COLOURS_BASIC, 0.0, "{}"),),
                         {"port": ("usb-c",), "jack": ("3.5mm", None), "anc": ("yes", "no")}),
    "smartwatch": Device("wearables", "Smartwatches", 299, 0.6, ("Tempo", "Pulsar", "Aurel", "Vita"),
                         ("Watch ", "Active "), ("", "", "Pro", "Ultra", "SE"),
                         (("case_size", ("41mm", "45mm"), 0.08, "{}"), ("colour", COLOURS_BASIC, 0.0, "{}")),
                         {"port": ("magnetic",), "lte": ("yes", "no")}),
    "fitness_tracker": Device("wearables", "Fitness Trackers", 99, 0.4, ("Vita", "Stride", "Tempo"),
                              ("Band ", "Fit "), ("", "", "Plus", "HR"),
                              (("colour", COLOURS_BASIC, 0.0, "{}"),),
                              {"port": ("magnetic",)}),
    "camera": Device("cameras", "Digital Cameras", 999, 1.0, ("Lyra", "Fennec", "Halden", "Koru"),
                     ("M", "R", "Z"), ("", "", "II", "III", "Mark IV"),
                     (("kit", ("Body Only", "18-55mm Kit", "24-105mm Kit"), 0.2, "{}"),),
                     {"filter_mm": (49, 52, 55, 58, 62, 67, 72, 77), "card_slot": ("SD",), "port": ("usb-c",)}),
    "console": Device("gaming", "Consoles", 499, 1.0, ("Vortex", "Arcadia", "Pulse"),
                      ("Station ", "Box ", "Go "), ("", "", "Slim", "Pro", "OLED"),
                      (("storage", ("512GB", "1TB", "2TB"), 0.2, "{}"), ("edition", ("Digital", "Disc"), 0.12, "{} Edition")),
                      {"hdmi": ("yes",), "card_slot": ("microSD", None), "port": ("usb-c",)}),
    "smart_speaker": Device("smart_home", "Smart Speakers", 99, 0.45, ("Homelink", "Echora", "Brightly"),
                            ("Home ", "Hub ", "Mini "), ("", "", "Max", "Display"),
                            (("colour", ("Charcoal", "Chalk", "Sand"), 0.0, "{}"),),
                            {"protocol": ("matter", "zigbee", "wifi")}),
    "robot_vacuum": Device("smart_home", "Robot Vacuums", 399, 0.3, ("Sweepa", "Cleanix", "Dustin"),
                           ("S", "Q", "V"), ("", "", "Pro", "Max", "Plus"),
                           (("colour", ("Black", "White"), 0.0, "{}"),),
                           {"protocol": ("wifi",)}),
    "air_purifier": Device("smart_home", "Air Purifiers", 229, 0.25, ("Purea", "Breeze", "Airo"),
                           ("AP", "Core ", "Pure "), ("", "", "Max", "Mini"),
                           (("colour", ("White", "Black"), 0.0, "{}"),),
                           {"protocol": ("wifi", "matter")}),
}

# (category, brand) -> specs that differ from the category's choices.
BRAND_SPECS = {
    ("phone", "Aurel"): {"port": ("lightning", "lightning", "usb-c")},
    ("tablet", "Aurel"): {"port": ("lightning", "usb-c", "usb-c")},
    ("camera", "Lyra"): {"mount": ("LY-mount",)},
    ("camera", "Fennec"): {"mount": ("FX-mount",)},
    ("camera", "Halden"): {"mount": ("HZ-mount",)},
    ("camera", "Koru"): {"mount": ("KR-mount", "KR-mini-mount")},
}

# A TV's VESA pattern follows its size: (largest size in inches, pattern).
VESA_BY_SIZE = ((43, "200x200"), (55, "300x300"), (65, "400x400"), (999, "600x400"))


class Accessory(NamedTuple):
    family: str
    label: str                  # category_path: family > Accessories | Replacement Parts > label
    kind: str                   # "accessory" | "part"
    median_price: float
    share: float                # relative share of the family's accessory/part SKUs
    fit: str                    # see the module docstring
    targets: tuple              # device categories it can fit
    weight: float               # edge weight: 1.0 for an exact-model fit, lower for generic fits
    title: str                  # format string over brand, model, target_brand, specs
    extras: dict                # spec key -> choices drawn per SKU


STYLES_CASE = ("Clear", "Rugged", "Leather", "Slim", "Wallet", "Silicone")
CAPACITIES = ("64GB", "128GB", "256GB", "512GB")

ACCESSORIES = {
    # phones
    "phone_case": Accessory("phones", "Cases", "accessory", 25, 30, "model", ("phone",), 1.0,
                            "{brand} {style} Case for {model} - {colour}", {"style": STYLES_CASE, "colour": COLOURS_BASIC}),
    "screen_protector": Accessory("phones", "Screen Protectors", "accessory", 15, 14, "model", ("phone",), 1.0,
                                  "{brand} {style} Screen Protector for {model}",
                                  {"style": ("Tempered Glass", "Privacy", "Matte", "Tempered Glass 2-Pack")}),
    "usb_c_charger": Accessory("phones", "Chargers", "accessory", 29, 6, "spec:port=usb-c",
                               ("phone", "tablet", "earbuds", "headphones", "camera", "console"), 0.4,
                               "{brand} {watts}W USB-C Charger", {"watts": (20, 30, 45, 65)}),
    "usb_c_cable": Accessory("phones", "Cables", "accessory", 12, 6, "spec:port=usb-c",
                             ("phone", "tablet", "laptop", "earbuds", "headphones", "camera", "console"), 0.4,
                             "{brand} USB-C to USB-C Cable {length}", {"length": ("1m", "2m", "3m")}),
    "lightning_cable": Accessory("phones", "Cables", "accessory", 15, 2, "spec:port=lightning", ("phone", "tablet"), 0.5,
                                 "{brand} USB-C to Lightning Cable {length}", {"length": ("1m", "2m")}),
    "wireless_charger": Accessory("phones", "Wireless Chargers", "accessory", 35, 3, "spec:qi=yes", ("phone", "earbuds"), 0.4,
                                  "{brand} {watts}W Wireless Charging Pad", {"watts": (7.5, 10, 15)}),
    "power_bank": Accessory("phones", "Power Banks", "accessory", 39, 4, "any", ("phone", "tablet", "earbuds"), 0.3,
                            "{brand} {mah}mAh Power Bank", {"mah": (5000, 10000, 20000)}),
    "car_mount": Accessory("phones", "Car Mounts", "accessory", 22, 3, "any", ("phone",), 0.2,
                           "{brand} {style} Car Phone Mount", {"style": ("Magnetic", "Vent", "Dashboard")}),
    "phone_battery": Accessory("phones", "Batteries", "part", 35, 3, "model", ("phone",), 1.0,
                               "{brand} Replacement Battery for {model}", {}),
    # laptops
    "laptop_sleeve": Accessory("laptops", "Sleeves & Bags", "accessory", 29, 12, "spec:screen_in", ("laptop",), 0.6,
                               "{brand} {screen_in}-inch {style} Laptop Sleeve", {"style": ("Neoprene", "Felt", "Leather", "Padded")}),
    "usb_c_dock": Accessory("laptops", "Docks & Hubs", "accessory", 89, 8, "spec:port=usb-c", ("laptop", "tablet"), 0.5,
                            "{brand} {ports}-in-1 USB-C Dock", {"ports": (4, 7, 9, 12)}),
    "mouse": Accessory("laptops", "Mice", "accessory", 39, 10, "any", ("laptop",), 0.3,
                       "{brand} {style} Mouse", {"style": ("Wireless", "Ergonomic", "Travel", "Silent")}),
    "keyboard": Accessory("laptops", "Keyboards", "accessory", 69, 8, "any", ("laptop",), 0.3,
                          "{brand} {style} Keyboard", {"style": ("Wireless", "Mechanical", "Compact", "Backlit")}),
    "laptop_stand": Accessory("laptops", "Stands", "accessory", 45, 5, "any", ("laptop",), 0.2,
                              "{brand} {style} Laptop Stand", {"style": ("Aluminium", "Foldable", "Adjustable")}),
    "laptop_power_adapter": Accessory("laptops", "Power Adapters", "part", 59, 6, "brand", ("laptop",), 0.8,
                                      "{brand} {watts}W Power Adapter for {target_brand} Laptops", {"watts": (45, 65, 100)}),
    "laptop_battery": Accessory("laptops", "Batteries", "part", 79, 5, "model", ("laptop",), 1.0,
                                "{brand} Replacement Battery for {model}", {}),
    # tablets
    "tablet_case": Accessory("tablets", "Cases", "accessory", 35, 14, "model", ("tablet",), 1.0,
                             "{brand} {style} Case for {model} - {colour}",
                             {"style": ("Folio", "Rugged", "Smart", "Slim"), "colour": COLOURS_BASIC}),
    "tablet_screen_protector": Accessory("tablets", "Screen Protectors", "accessory", 19, 8, "model", ("tablet",), 1.0,
                                         "{brand} {style} Screen Protector for {model}",
                                         {"style": ("Tempered Glass", "Paper-Feel", "Matte")}),
    "tablet_keyboard": Accessory("tablets", "Keyboards", "accessory", 129, 5, "model", ("tablet",), 1.0,
                                 "{brand} Keyboard Cover for {model}", {}),
    "stylus": Accessory("tablets", "Styluses", "accessory", 79, 6, "brand", ("tablet",), 0.8,
                        "{brand} {style} Stylus for {target_brand} Tablets", {"style": ("Active", "Pro", "Slim")}),
    "stylus_tips": Accessory("tablets", "Stylus Tips", "part", 15, 3, "brand", ("tablet",), 0.7,
                             "{brand} Replacement Stylus Tips for {target_brand} Tablets ({pack}-Pack)", {"pack": (2, 4)}),
    "tablet_stand": Accessory("tablets", "Stands", "accessory", 29, 3, "any", ("tablet",), 0.2,
                              "{brand} {style} Tablet Stand", {"style": ("Aluminium", "Foldable")}),
    # tvs
    "wall_mount": Accessory("tvs", "Wall Mounts", "accessory", 49, 10, "spec:vesa", ("tv",), 0.6,
                            "{brand} {style} TV Wall Mount VESA {vesa}", {"style": ("Fixed", "Tilting", "Full-Motion")}),
    "soundbar": Accessory("tvs", "Soundbars", "accessory", 249, 8, "any", ("tv",), 0.3,
                          "{brand} {channels} Soundbar", {"channels": ("2.0", "2.1", "3.1", "5.1")}),
    "hdmi_cable": Accessory("tvs", "HDMI Cables", "accessory", 19, 8, "spec:hdmi=yes", ("tv", "console", "laptop"), 0.4,
                            "{brand} HDMI 2.1 Cable {length}", {"length": ("1m", "2m", "3m", "5m")}),
    "tv_remote": Accessory("tvs", "Remotes", "part", 19, 4, "brand", ("tv",), 0.7,
                           "{brand} Replacement Remote for {target_brand} TVs", {}),
    # audio
    "earbuds_case": Accessory("audio", "Cases", "accessory", 19, 8, "model", ("earbuds",), 1.0,
                              "{brand} {style} Case for {model}", {"style": ("Silicone", "Leather", "Clear")}),
    "ear_tips": Accessory("audio", "Ear Tips", "part", 15, 8, "model", ("earbuds",), 1.0,
                          "{brand} {style} Ear Tips for {model}", {"style": ("Foam", "Silicone", "Memory Foam")}),
    "ear_cushions": Accessory("audio", "Ear Cushions", "part", 25, 7, "model", ("headphones",), 1.0,
                              "{brand} {style} Ear Cushions for {model}", {"style": ("Protein Leather", "Velour", "Cooling Gel")}),
    "headphone_stand": Accessory("audio", "Stands", "accessory", 29, 3, "any", ("headphones",), 0.2,
                                 "{brand} {style} Headphone Stand", {"style": ("Wooden", "Aluminium")}),
    "audio_cable": Accessory("audio", "Cables", "accessory", 12, 4, "spec:jack=3.5mm", ("headphones",), 0.4,
                             "{brand} 3.5mm Audio Cable {length}", {"length": ("1m", "1.5m", "3m")}),
    # wearables
    "watch_band": Accessory("wearables", "Bands", "accessory", 29, 20, "model", ("smartwatch", "fitness_tracker"), 1.0,
                            "{brand} {style} Band for {model} - {colour}",
                            {"style": ("Sport", "Leather", "Milanese Loop", "Nylon", "Metal Link"), "colour": COLOURS_BASIC}),
    "watch_screen_protector": Accessory("wearables", "Screen Protectors", "accessory", 12, 6, "model", ("smartwatch",), 1.0,
                                        "{brand} Screen Protector for {model} ({pack}-Pack)", {"pack": (2, 3)}),
    "watch_case": Accessory("wearables", "Cases", "accessory", 15, 5, "model", ("smartwatch",), 1.0,
                            "{brand} {style} Bumper Case for {model}", {"style": ("Clear", "Rugged")}),
    "watch_charger": Accessory("wearables", "Chargers", "part", 25, 5, "brand", ("smartwatch", "fitness_tracker"), 0.8,
                               "{brand} Magnetic Charging Cable for {target_brand} Wearables", {}),
    # cameras
    "lens": Accessory("cameras", "Lenses", "accessory", 599, 12, "spec:mount", ("camera",), 0.7,
                      "{brand} {focal} {aperture} Lens for {mount}",
                      {"focal": ("24mm", "35mm", "50mm", "85mm", "18-135mm", "70-200mm"),
                       "aperture": ("f/1.4", "f/1.8", "f/2.8", "f/4"), "diameter_mm": (49, 52, 55, 58, 62, 67, 72, 77)}),
    "camera_filter": Accessory("cameras", "Filters", "accessory", 39, 8, "spec:filter_mm", ("camera",), 0.6,
                               "{brand} {filter_mm}mm {style} Filter", {"style": ("UV", "Circular Polarizer", "ND8", "ND64")}),
    "memory_card": Accessory("cameras", "Memory Cards", "accessory", 25, 8, "spec:card_slot", ("camera", "phone", "console"), 0.5,
                             "{brand} {capacity} {card_slot} Memory Card", {"capacity": CAPACITIES}),
    "tripod": Accessory("cameras", "Tripods", "accessory", 59, 6, "any", ("camera",), 0.2,
                        "{brand} {style} Tripod", {"style": ("Travel", "Carbon", "Aluminium")}),
    "camera_bag": Accessory("cameras", "Bags", "accessory", 49, 5, "any", ("camera",), 0.2,
                            "{brand} {style} Camera Bag", {"style": ("Sling", "Backpack", "Shoulder")}),
    "camera_battery": Accessory("cameras", "Batteries", "part", 49, 8, "model", ("camera",), 1.0,
                                "{brand} Rechargeable Battery for {model}", {}),
    # gaming
    "controller": Accessory("gaming", "Controllers", "accessory", 69, 14, "model", ("console",), 1.0,
                            "{brand} Wireless Controller for {model} - {colour}", {"colour": ("Black", "White", "Red", "Camo")}),
    "gaming_headset": Accessory("gaming", "Headsets", "accessory", 79, 8, "any", ("console",), 0.3,
                                "{brand} {style} Gaming Headset", {"style": ("Wireless", "Wired", "Surround")}),
    "charging_dock": Accessory("gaming", "Charging Docks", "accessory", 29, 5, "model", ("console",), 0.9,
                               "{brand} Controller Charging Dock for {model}", {}),
    # smart home
    "smart_bulb": Accessory("smart_home", "Smart Lighting", "accessory", 19, 10, "spec:protocol", ("smart_speaker",), 0.5,
                            "{brand} {style} Smart Bulb ({protocol})", {"style": ("White", "Colour", "Filament")}),
    "smart_plug": Accessory("smart_home", "Smart Plugs", "accessory", 15, 6, "spec:protocol", ("smart_speaker",), 0.5,
                            "{brand} Smart Plug ({protocol}, {pack}-Pack)", {"pack": (1, 2, 4)}),
    "smart_hub": Accessory("smart_home", "Hubs", "accessory", 59, 3, "spec:protocol", ("smart_speaker",), 0.5,
                           "{brand} Smart Home Hub ({protocol})", {}),
    "replacement_filter": Accessory("smart_home", "Filters", "part", 39, 10, "model", ("air_purifier",), 1.0,
                                    "{brand} {style} Replacement Filter for {model}", {"style": ("HEPA", "Carbon", "HEPA + Carbon")}),
    "vacuum_brush_kit": Accessory("smart_home", "Brushes & Filters", "part", 29, 8, "model", ("robot_vacuum",), 1.0,
                                  "{brand} Brush and Filter Kit for {model}", {}),
}

MARGINS = {"device": (0.03, 0.15), "accessory": (0.30, 0.70), "part": (0.30, 0.65)}
PATH_SECTIONS = {"accessory": "Accessories", "part": "Replacement Parts"}

SPEC_LABELS = {
    "screen_in": "screen size (in)", "port": "port", "qi": "wireless charging", "card_slot": "card slot",
    "filter_mm": "filter thread (mm)", "diameter_mm": "filter thread (mm)", "fits": "fits", "anc": "noise cancelling",
}


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------

def generate_catalog(n_skus: int = 12000, seed: int = 0, device_share: float = 0.22,
                     price_sigma: float = 0.35, zero_stock_share: float = 0.07, generic_per_device: int | None = 10,
                     as_of: date = date(2026, 9, 1), years: int = 3) -> Catalog:
    """Draw a catalog of `n_skus` SKUs (fewer only if a family is too small to hold any device).
    `generic_per_device=None` lists every compatible generic accessory (the full, much larger graph)."""
    rng = np.random.default_rng(seed)
    family_budgets = _split(n_skus, {f: fam.share for f, fam in FAMILIES.items()})
    first_day, n_days = as_of - timedelta(days=365 * years), 365 * years

    devices = []
    for family, budget in family_budgets.items():
        cats = {c: d.share for c, d in DEVICES.items() if d.family == family}
        for cat, n in _split(round(budget * device_share), cats).items():
            devices += _draw_devices(cat, n, price_sigma, first_day, n_days, rng)
    devices = pd.DataFrame(devices)

    accessories = []
    for family, budget in family_budgets.items():
        n_acc = budget - int((devices["family"] == family).sum())
        feasible = {c: a.share for c, a in ACCESSORIES.items() if a.family == family and len(_candidates(a, devices))}
        for cat, n in _split(n_acc, feasible).items():
            accessories += _draw_accessories(cat, n, devices, price_sigma, as_of, first_day, n_days, rng)
    accessories = pd.DataFrame(accessories)

    items = pd.concat([devices, accessories], ignore_index=True)
    items["sku"] = [f"E{i:06d}" for i in rng.permutation(len(items)) + 1]
    low, high = (items["kind"].map(lambda k: MARGINS[k][i]).to_numpy() for i in (0, 1))
    items["margin"] = rng.uniform(low, high).round(3)
    items["price_band"] = _price_bands(items)
    items["stock"] = _stock(items["kind"], zero_stock_share, rng)
    items["image_uri"] = None
    items["spec_text"] = [_spec_text(r) for r in items.itertuples()]
    edges = _fit_edges(items, generic_per_device, rng)
    items = items.sort_values("sku", ignore_index=True)[ITEM_COLUMNS]
    return Catalog(items=items, edges=edges.sort_values(["src_sku", "dst_sku"], ignore_index=True))


def _split(total: int, weights: dict) -> dict:
    """Split an integer total by weights so the parts sum exactly to it (largest remainder)."""
    if not weights or total <= 0:
        return {k: 0 for k in weights}
    keys, w = list(weights), np.array(list(weights.values()), dtype=float)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]] += 1
    return dict(zip(keys, counts.tolist()))


def _draw_devices(category: str, n: int, price_sigma: float, first_day: date, n_days: int, rng) -> list[dict]:
    """Draw device models until `n` SKUs exist; each combination of a model's variant values is a SKU."""
    dev, fam = DEVICES[category], FAMILIES[DEVICES[category].family]
    rows, names = [], set()
    while len(rows) < n:
        brand = _choose(dev.brands, rng)
        name = _model_name(brand, dev, names, rng)
        base_price = dev.median_price * rng.lognormal(0.0, price_sigma)
        launch = first_day + timedelta(days=int(rng.integers(n_days)))
        choices = {**dev.specs, **BRAND_SPECS.get((category, brand), {})}
        model_specs = {k: _choose(v, rng) for k, v in choices.items()}
        model_specs = {"model": name} | {k: v for k, v in model_specs.items() if v is not None}
        picked = [_pick_values(values, rng) for _, values, _, _ in dev.axes]
        for combo in product(*picked):
            if len(rows) == n:
                break
            specs, labels, price = dict(model_specs), [], base_price
            for (key, values, step, fmt), value in zip(dev.axes, combo):
                specs[key] = value
                labels.append(fmt.format(value))
                price *= (1 + step) ** values.index(value)
            if "screen_in" in specs and category == "tv":
                specs["vesa"] = next(p for size, p in VESA_BY_SIZE if specs["screen_in"] <= size)
            rows.append(dict(title=f"{name} {' '.join(labels)}", family=dev.family, category=category,
                             category_path=f"{fam.label} > {dev.label}", kind="device", brand=brand,
                             price=_price(price), specs=specs, launch_date=launch, model=name))
    return rows


def _model_name(brand: str, dev: Device, taken: set, rng) -> str:
    """A new, unused model name such as "Nova X12 Pro"."""
    while True:
        tier = _choose(dev.tiers, rng)
        name = f"{brand} {_choose(dev.lines, rng)}{rng.integers(2, 30)}" + (f" {tier}" if tier else "")
        if name not in taken:
            taken.add(name)
            return name


def _pick_values(values: tuple, rng, most: int = 3) -> list:
    """A model comes in a few of an axis' values (kept in table order, cheapest first)."""
    k = int(rng.integers(1, min(len(values), most) + 1))
    return [values[i] for i in sorted(rng.choice(len(values), size=k, replace=False))]


def _candidates(acc: Accessory, devices: pd.DataFrame) -> pd.DataFrame:
    """The devices an accessory of this category could be made for."""
    out = devices[devices["category"].isin(acc.targets)]
    if acc.fit.startswith("spec:"):
        key, _, value = acc.fit[5:].partition("=")
        spec = out["specs"].map(lambda s: s.get(key))
        out = out[spec == value] if value else out[spec.notna()]
    return out


def _draw_accessories(category: str, n: int, devices: pd.DataFrame, price_sigma: float,
                      as_of: date, first_day: date, n_days: int, rng) -> list[dict]:
    """Draw `n` SKUs of one accessory/part category, each made for a device model, brand or spec."""
    acc, fam = ACCESSORIES[category], FAMILIES[ACCESSORIES[category].family]
    section = PATH_SECTIONS[acc.kind]
    candidates = _candidates(acc, devices)
    models = candidates.drop_duplicates("model").to_dict("records")
    # Popular models get many cases, niche ones a few: a lognormal appeal per model.
    model_p = rng.lognormal(0.0, 0.8, len(models))
    model_p /= model_p.sum()
    rows = []
    for _ in range(n):
        specs = {k: _choose(v, rng) for k, v in acc.extras.items()}
        fields = {"model": "", "target_brand": ""}
        anchor = models[int(rng.choice(len(models), p=model_p))]
        if acc.fit == "model":
            fields["model"] = specs["fits"] = anchor["model"]
        elif acc.fit == "brand":
            fields["target_brand"] = specs["fits_brand"] = anchor["brand"]
        elif acc.fit.startswith("spec:"):
            key = acc.fit[5:].partition("=")[0]
            specs[key] = anchor["specs"][key]
        own_brand = acc.fit in ("model", "brand") and rng.random() < 0.25   # the device maker's own accessory
        brand = anchor["brand"] if own_brand else _choose(fam.accessory_brands, rng)
        if acc.fit == "model":
            launch = min(anchor["launch_date"] + timedelta(days=int(rng.integers(0, 90))), as_of - timedelta(days=1))
        else:
            launch = first_day + timedelta(days=int(rng.integers(n_days)))
        title = acc.title.format(brand=brand, **fields, **specs)
        rows.append(dict(title=title, family=acc.family, category=category,
                         category_path=f"{fam.label} > {section} > {acc.label}", kind=acc.kind, brand=brand,
                         price=_price(acc.median_price * rng.lognormal(0.0, price_sigma)), specs=specs,
                         launch_date=launch, model=fields["model"] or None))
    return rows


def _fit_edges(items: pd.DataFrame, generic_per_device: int | None, rng) -> pd.DataFrame:
    """The fit graph: every exact-model fit, and per device and category up to `generic_per_device`
    of the compatible generic SKUs (a storefront's curated "compatible accessories" list).
    Every accessory/part keeps at least one device. Works on row numbers; SKUs are filled in last."""
    rows = items.assign(row=np.arange(len(items)))
    devices = rows[rows["kind"] == "device"]
    parts = []
    for category, acc in ACCESSORIES.items():
        dst = rows[rows["category"] == category]
        if dst.empty:
            continue
        src = devices[devices["category"].isin(acc.targets)]
        if acc.fit == "model":
            on, dst_key, src_key = "model", dst["model"], src["model"]
        elif acc.fit == "brand":
            on, dst_key, src_key = "brand", dst["specs"].map(lambda s: s["fits_brand"]), src["brand"]
        elif acc.fit.startswith("spec:"):
            key = acc.fit[5:].partition("=")[0]
            on, dst_key, src_key = "spec", dst["specs"].map(lambda s: s[key]), src["specs"].map(lambda s: s.get(key))
        else:  # any
            on, dst_key, src_key = "spec", pd.Series(0, index=dst.index), pd.Series(0, index=src.index)
        pairs = pd.DataFrame({"dst": dst["row"], on: dst_key}).merge(
            pd.DataFrame({"src": src["row"], on: src_key}), on=on)
        parts.append(pairs[["src", "dst"]].assign(weight=acc.weight, exact=acc.fit == "model"))
    parts.append(_filters_via_lenses(rows, weight=0.3))
    edges = pd.concat(parts, ignore_index=True)
    edges = edges.sort_values("weight", ascending=False, kind="stable").drop_duplicates(["src", "dst"])
    if generic_per_device is not None:
        generic = edges[~edges["exact"]].assign(category=lambda e: rows["category"].to_numpy()[e["dst"]],
                                                draw=lambda e: rng.random(len(e)))
        order = generic.groupby(["src", "category"])["draw"].rank(method="first")
        orphans = generic.sort_values("draw").drop_duplicates("dst")      # one device for every SKU
        edges = pd.concat([edges[edges["exact"]], generic[order <= generic_per_device], orphans])
        edges = edges.drop_duplicates(["src", "dst"])
    sku, kind = items["sku"].to_numpy(), items["kind"].to_numpy()
    return pd.DataFrame({"src_sku": sku[edges["src"]], "dst_sku": sku[edges["dst"]],
                         "kind": kind[edges["dst"]], "weight": edges["weight"].to_numpy()})


def _filters_via_lenses(rows: pd.DataFrame, weight: float) -> pd.DataFrame:
    """A filter also fits a camera whose mount takes a lens of the filter's thread size."""
    spec = lambda frame, key: frame["specs"].map(lambda s: s.get(key))  # noqa: E731
    cams = rows[rows["category"] == "camera"]
    lenses = rows[rows["category"] == "lens"]
    filters = rows[rows["category"] == "camera_filter"]
    mount_threads = pd.DataFrame({"mount": spec(lenses, "mount"),
                                  "thread": spec(lenses, "diameter_mm")}).drop_duplicates()
    pairs = (pd.DataFrame({"src": cams["row"], "mount": spec(cams, "mount")})
             .merge(mount_threads, on="mount")
             .merge(pd.DataFrame({"dst": filters["row"], "thread": spec(filters, "filter_mm")}), on="thread"))
    return pairs[["src", "dst"]].assign(weight=weight, exact=False)


def _price(value: float) -> float:
    """Shelf prices end in .99 (under $10: two decimals)."""
    return round(float(value), 2) if value < 10 else float(round(value)) - 0.01


def _price_bands(items: pd.DataFrame) -> pd.Series:
    """1 (cheapest fifth of its category) .. 5 (dearest fifth)."""
    rank = items.groupby("category")["price"].rank(method="first") - 1
    size = items.groupby("category")["price"].transform("size")
    return (1 + (5 * rank // size)).astype(int)


def _stock(kinds: pd.Series, zero_share: float, rng) -> np.ndarray:
    """Units on hand: devices are stocked thinner than accessories, and some SKUs are sold out."""
    mean = np.where(kinds == "device", 25.0, 80.0)
    stock = rng.poisson(rng.gamma(1.5, mean / 1.5))
    return np.where(rng.random(len(kinds)) < zero_share, 0, stock).astype(int)


def _spec_text(row) -> str:
    """One readable paragraph for the text embedding: title, place in the catalog, brand and specs."""
    specs = ", ".join(f"{SPEC_LABELS.get(k, k.replace('_', ' '))}: {v}" for k, v in row.specs.items())
    return f"{row.title}. {row.category_path}. Brand: {row.brand}." + (f" {specs}." if specs else "")


def _choose(values: tuple, rng):
    """One value of a table tuple, kept as the plain Python value (specs must serialise to JSON)."""
    return values[int(rng.integers(len(values)))]
