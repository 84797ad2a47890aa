"""Copies found by content (the deletion report's search): any .npy array, whatever its name, compared image by
image by SHA-256; other arrays are not images, other shapes are reported as skipped."""

import numpy as np

from fairforget.components.copies import find_copies, image_digests


def test_copies_are_found_by_content_under_any_name_and_nothing_else_matches(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    deleted = image_digests(images[:3])
    store = tmp_path / "store"
    (store / "run" / "augmented").mkdir(parents=True)
    np.save(store / "run" / "augmented" / "images.npy", images)  # all 3 deleted among 10
    with open(store / "cache-object", "wb") as handle:  # a DVC cache object: an md5 name, no suffix
        np.save(handle, images[[5, 1, 7]])
    np.save(store / "other.npy", images[3:])  # no deleted image
    np.save(store / "weights.npy", rng.normal(size=(4, 3)))  # not images
    np.save(store / "big.npy", rng.integers(0, 256, (2, 16, 16, 1), dtype=np.uint8))
    (store / "notes.txt").write_bytes(images[0].tobytes())  # raw bytes outside an array: not an image array

    scan = find_copies(store, deleted, (8, 8, 1))
    assert scan.copies == {"run/augmented/images.npy": 3, "cache-object": 1}
    assert scan.arrays == 3 and scan.total == 4
    assert set(scan.skipped) == {"big.npy"}
    assert find_copies(tmp_path / "absent", deleted, (8, 8, 1)).total == 0
    # a changed pixel is another image
    changed = images[:1].copy()
    changed[0, 0, 0, 0] ^= 1
    assert not image_digests(changed) & deleted
