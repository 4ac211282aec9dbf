import numpy as np
import pytest
import torch

from _dataset_layouts import both, jpg, npy, png8, png16, rgb_pattern, write_tree
from apdepth.data import get_dataset
from apdepth.data.transforms import RandomHorizontalFlip, hflip, normalize_depth_quantile

KINDS = ["tar", "folder"]


def _check_sample(s, h, w):
    assert s["rgb"].shape == (3, h, w) and s["rgb"].dtype == torch.float32
    assert s["depth"].shape == (h, w) and s["depth"].dtype == torch.float32
    assert s["valid"].shape == (h, w) and s["valid"].dtype == torch.bool
    assert 0.0 <= float(s["rgb"].min()) and float(s["rgb"].max()) <= 1.0


# ---------------------------------------------------------------- NYUv2
def _nyu_files():
    depth = np.full((480, 640), 2500, np.uint16)  # 2.5 m
    depth[100, 100] = 0  # hole
    depth[200, 200] = 12000  # 12 m: beyond the 10 m range
    rgb = rgb_pattern(480, 640)
    return {
        "test/kitchen_0004/rgb_0001.png": png8(rgb),
        "test/kitchen_0004/depth_0001.png": png16(depth),
        "test/kitchen_0004/filled_0001.png": png16(depth),
        "train/bedroom_0001/rgb_0002.png": png8(rgb),
        "train/bedroom_0001/depth_0002.png": png16(depth),
    }, rgb


@pytest.mark.parametrize("kind", KINDS)
def test_nyu(tmp_path, kind):
    files, rgb = _nyu_files()
    ds = get_dataset("nyu", both(tmp_path, "nyu", files)[kind])
    assert len(ds) == 1  # enumeration prefers test/ over train/
    s = ds[0]
    _check_sample(s, 480, 640)
    assert s["rgb_relpath"] == "test/kitchen_0004/rgb_0001.png"
    np.testing.assert_array_equal((s["rgb"].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8), rgb)
    assert float(s["depth"][50, 50]) == pytest.approx(2.5)
    assert float(s["depth"][200, 200]) == pytest.approx(12.0)
    v = s["valid"].numpy()
    expected = np.zeros((480, 640), bool)
    expected[45:471, 41:601] = True
    expected[100, 100] = expected[200, 200] = False
    np.testing.assert_array_equal(v, expected)
    assert (ds.min_depth, ds.max_depth, ds.processing_resolution) == (1e-3, 10.0, 0)


def test_nyu_split_file(tmp_path):
    files, _ = _nyu_files()
    split = tmp_path / "split.txt"
    split.write_text("train/bedroom_0001/rgb_0002.png train/bedroom_0001/depth_0002.png\n")
    ds = get_dataset("nyu", both(tmp_path, "nyu", files)["tar"], split_file=split)
    assert [s.rgb for s in ds.samples] == ["train/bedroom_0001/rgb_0002.png"]


# ---------------------------------------------------------------- KITTI
KITTI_RGB = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
KITTI_GT = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"


def _kitti_files():
    h, w = 375, 1242  # raw size: crop keeps rows 23: and cols 13:1229
    depth = np.zeros((h, w), np.uint16)
    depth[23:, 13:1229] = 896  # 3.5 m
    depth[23 + 200, 13 + 600] = 0  # no LiDAR
    depth[23 + 201, 13 + 600] = 90 * 256  # 90 m > 80 m
    depth[23, 13] = 512  # top-left of the crop: 2 m
    rgb = rgb_pattern(h, w, seed=1)
    return {
        KITTI_RGB: png8(rgb),
        KITTI_GT: png16(depth),
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000070.png": png8(rgb),  # no GT
    }, rgb


@pytest.mark.parametrize("kind", KINDS)
def test_kitti(tmp_path, kind):
    files, rgb = _kitti_files()
    root = both(tmp_path, "kitti", files)[kind]
    split = tmp_path / "kitti_split.txt"
    split.write_text(
        f"{KITTI_RGB} {KITTI_GT} 721.5377\n"
        "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000070.png None 721.5377\n"
    )
    for ds in (get_dataset("kitti", root, split_file=split), get_dataset("kitti", root)):
        assert len(ds) == 1
        s = ds[0]
        _check_sample(s, 352, 1216)
        assert s["rgb_relpath"] == KITTI_RGB
        np.testing.assert_array_equal(
            (s["rgb"].numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8), rgb[23:, 13:1229]
        )
        d = s["depth"].numpy()
        assert d[0, 0] == pytest.approx(2.0) and d[100, 100] == pytest.approx(3.5)
        expected = np.zeros((352, 1216), bool)
        expected[117:321, 43:1172] = True  # Eigen crop fractions of 352 x 1216
        expected[200, 600] = expected[201, 600] = False
        np.testing.assert_array_equal(s["valid"].numpy(), expected)
    assert get_dataset("kitti", root, split_file=split).samples[0].focal == pytest.approx(721.5377)
    garg = get_dataset("kitti", root, eval_crop="garg")[0]["valid"].numpy()
    assert garg[143:349, 43:1172].sum() == (349 - 143) * (1172 - 43) - 2 and garg.sum() == garg[143:349].sum()


# ---------------------------------------------------------------- ETH3D
ETH_RGB = "rgb/office/images/dslr_images/DSC_0219.JPG"
ETH_GT = "depth/office_dslr_depth/office/ground_truth_depth/dslr_images/DSC_0219.JPG"


@pytest.mark.parametrize("kind", KINDS)
def test_eth3d_raw_float32(tmp_path, kind):
    h, w = 8, 12
    depth = np.linspace(0.5, 20.0, h * w, dtype=np.float32).reshape(h, w)
    depth[2, 3] = np.inf
    files = {ETH_RGB: jpg(rgb_pattern(h, w)), ETH_GT: depth.astype("<f4").tobytes()}
    ds = get_dataset("eth3d", both(tmp_path, "eth3d", files)[kind])
    assert len(ds) == 1 and ds.processing_resolution == 756 and ds.alignment_max_res == 1024
    s = ds[0]
    _check_sample(s, h, w)
    expected = depth.copy()
    expected[2, 3] = 0.0
    np.testing.assert_array_equal(s["depth"].numpy(), expected)
    assert s["valid"].sum() == h * w - 1 and not s["valid"][2, 3]


def test_eth3d_wrong_size_is_reported(tmp_path):
    files = {ETH_RGB: jpg(rgb_pattern(8, 12)), ETH_GT: np.zeros(7, "<f4").tobytes()}
    ds = get_dataset("eth3d", write_tree(tmp_path / "e", files))
    with pytest.raises(ValueError, match="holds 7 float32 values"):
        ds[0]


# ---------------------------------------------------------------- ScanNet
@pytest.mark.parametrize("kind", KINDS)
def test_scannet(tmp_path, kind):
    depth = np.array([[0, 500, 9999, 10000], [1, 2, 3000, 65535]], np.uint16)
    files = {"scene0406_02/color/000300.jpg": jpg(rgb_pattern(2, 4)), "scene0406_02/depth/000300.png": png16(depth)}
    ds = get_dataset("scannet", both(tmp_path, "scannet", files)[kind])
    s = ds[0]
    _check_sample(s, 2, 4)
    np.testing.assert_allclose(s["depth"].numpy(), depth / 1000.0, rtol=1e-6)
    # strictly inside (1e-3, 10): 1 mm and 10 m are excluded
    np.testing.assert_array_equal(s["valid"].numpy(), [[False, True, True, False], [False, True, True, False]])


# ---------------------------------------------------------------- DIODE
@pytest.mark.parametrize("kind", KINDS)
def test_diode(tmp_path, kind):
    stem = "indoors/scene_00021/scan_00189/00021_00189_indoors_200_010"
    depth = np.array([[0.5, 0.7, 5.0], [349.0, 351.0, 3.0]], np.float32)[..., None]  # (H, W, 1) as DIODE
    mask = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
    files = {
        f"{stem}.png": png8(rgb_pattern(2, 3)),
        f"{stem}_depth.npy": npy(depth),
        f"{stem}_depth_mask.npy": npy(mask),
    }
    root = both(tmp_path, "diode", files)[kind]
    split = tmp_path / "diode.txt"
    split.write_text(f"{stem}.png {stem}_depth.npy {stem}_depth_mask.npy\n")
    for ds in (get_dataset("diode", root), get_dataset("diode", root, split_file=split)):
        s = ds[0]
        _check_sample(s, 2, 3)
        np.testing.assert_array_equal(s["depth"].numpy(), depth[..., 0])
        np.testing.assert_array_equal(s["valid"].numpy(), [[False, True, True], [True, False, False]])
        assert ds.processing_resolution == 640


# ---------------------------------------------------------------- Hypersim / Virtual KITTI 2
@pytest.mark.parametrize("kind", KINDS)
def test_hypersim(tmp_path, kind):
    depth = np.array([[0, 1234], [64999, 65001]], np.uint16)
    files = {
        "ai_001_001/rgb_cam_00_fr0000.png": png8(rgb_pattern(2, 2)),
        "ai_001_001/depth_plane_cam_00_fr0000.png": png16(depth),
    }
    ds = get_dataset("hypersim", both(tmp_path, "hs", files)[kind])
    s = ds[0]
    np.testing.assert_allclose(s["depth"].numpy(), depth / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(s["valid"].numpy(), [[False, True], [True, False]])
    assert ds.boundary_metrics and ds.max_depth == 65.0


@pytest.mark.parametrize("kind", KINDS)
def test_vkitti(tmp_path, kind):
    depth = np.full((375, 1242), 1500, np.uint16)  # 15 m
    depth[23, 13] = 65535  # sky: 655 m, invalid
    depth[0, 0] = 100  # cropped away
    rgb_rel = "Scene01/clone/frames/rgb/Camera_0/rgb_00000.jpg"
    files = {rgb_rel: jpg(rgb_pattern(375, 1242)), "Scene01/clone/frames/depth/Camera_0/depth_00000.png": png16(depth)}
    ds = get_dataset("vkitti", both(tmp_path, "vk", files)[kind])
    s = ds[0]
    _check_sample(s, 352, 1216)
    assert float(s["depth"][0, 0]) == pytest.approx(655.35) and float(s["depth"][5, 5]) == pytest.approx(15.0)
    assert s["valid"].sum() == 352 * 1216 - 1


def test_registry_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'nyu2'"):
        get_dataset("nyu2", tmp_path)
    with pytest.raises(ValueError, match="no samples"):
        get_dataset("scannet", write_tree(tmp_path / "empty", {"readme.txt": b"x"}))


def test_registry_serves_the_synthetic_dataset(tmp_path):
    from apdepth.cli import main

    assert main(["synth", "--out", str(tmp_path / "syn"), "--num", "2", "--size", "24x32", "--seed", "5"]) == 0
    ds = get_dataset("synthetic", tmp_path / "syn")
    assert len(ds) == 2 and ds.boundary_metrics and ds.min_depth > 0 and ds.max_depth >= 20
    s = ds[0]
    assert s["rgb"].shape == (3, 24, 32) and s["depth"].shape == (24, 32)
    assert bool(s["valid"].any()) and float(s["depth"][s["valid"]].min()) > 0


def test_dataloader_workers_read_tar(tmp_path):
    depth = np.full((4, 5), 1000, np.uint16)
    files = {}
    for i in range(4):
        files[f"s{i}/color/{i:06d}.jpg"] = jpg(rgb_pattern(4, 5, seed=i))
        files[f"s{i}/depth/{i:06d}.png"] = png16(depth * (i + 1))
    ds = get_dataset("scannet", both(tmp_path, "sc", files)["tar"])
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    got = torch.cat([b["depth"][:, 0, 0] for b in loader]).tolist()
    assert got == pytest.approx([1.0, 2.0, 3.0, 4.0])


# ---------------------------------------------------------------- transforms
def test_normalize_depth_quantile():
    depth = torch.arange(1, 101, dtype=torch.float32).reshape(10, 10)  # 1..100 m
    valid = torch.ones(10, 10, dtype=torch.bool)
    valid[0, 0] = False
    norm, v = normalize_depth_quantile(depth, valid)
    vals = depth[valid].double().sort().values
    # 99 valid values 2..100: the 2% quantile sits at position 0.02*98 = 1.96, the 98% at 96.04
    lo = vals[1] + (vals[2] - vals[1]) * 0.96
    hi = vals[96] + (vals[97] - vals[96]) * 0.04
    assert (float(lo), float(hi)) == pytest.approx(tuple(np.quantile(np.arange(2, 101), [0.02, 0.98])))
    expected = ((depth.double() - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)
    expected[0, 0] = 0
    torch.testing.assert_close(norm, expected.float())
    assert torch.equal(v, valid)
    assert float(norm[valid].min()) == -1.0 and float(norm.max()) == 1.0
    flat, fv = normalize_depth_quantile(torch.full((3, 3), 2.0), torch.ones(3, 3, dtype=torch.bool))
    assert not fv.any() and not flat.any()
    with pytest.raises(ValueError, match="same shape"):
        normalize_depth_quantile(depth, valid[:5])


def test_hflip():
    s = {
        "rgb": torch.arange(12.0).reshape(1, 3, 4).expand(3, 3, 4).clone(),
        "depth": torch.arange(12.0).reshape(3, 4),
        "valid": torch.tensor([[True, False, False, False]] * 3),
        "rgb_relpath": "x.png",
    }
    f = hflip(s)
    assert f["depth"][0].tolist() == [3.0, 2.0, 1.0, 0.0] and f["valid"][0].tolist() == [False, False, False, True]
    assert f["rgb_relpath"] == "x.png" and torch.equal(hflip(f)["rgb"], s["rgb"])
    g = torch.Generator().manual_seed(0)
    flips = [RandomHorizontalFlip(0.5, generator=g)(s)["depth"][0, 0].item() == 3.0 for _ in range(200)]
    assert 60 < sum(flips) < 140
    assert RandomHorizontalFlip(1.0)(s)["depth"][0, 0] == 3.0 and RandomHorizontalFlip(0.0)(s)["depth"][0, 0] == 0.0
