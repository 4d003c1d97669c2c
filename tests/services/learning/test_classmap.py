"""Class maps: output channels in global index order, and stored local mask values mapped to them."""

from __future__ import annotations

from services.learning.classmap import channel_names, channels_of, local_to_channel_lut


def test_local_mask_values_map_to_channels_in_global_index_order():
    class_map = {0: "background", 1: "car", 2: "person", 5: "bus"}  # index 3, 4 burnt by failed tasks
    assert channels_of(class_map) == [0, 1, 2, 5]
    assert channel_names(class_map) == {0: "background", 1: "car", 2: "person", 3: "bus"}
    new, also_labelled = ["bus"], ["person"]
    lut = local_to_channel_lut(new, also_labelled, {"bus": 5}, class_map)
    assert (lut[0], lut[1], lut[2], lut[255]) == (0, 3, 2, 255)
    # Scoring an older version that never knew "bus": its pixels are background to it.
    assert local_to_channel_lut(new, also_labelled, {"bus": 5}, {0: "background", 1: "car", 2: "person"})[1] == 0
    # A model without the also-labelled "person" (rolled back past it) ignores those pixels.
    assert local_to_channel_lut(new, also_labelled, {"bus": 5}, {0: "background", 1: "car", 5: "bus"})[2] == 255
