"""Ground-truth maps: the benchmark rules, on written XML and on the real VGG-SS annotations."""

from pathlib import Path

import numpy as np
import pytest

from sspl_lib.data.gt import (AnnotationError, flickr_gt_map, gt_maps_for_split, load_id_list,
                              load_vggss_annotations, vggss_gt_map)

META = Path(__file__).resolve().parents[1].parent / "shared" / "metadata"

XML = """<annotation><filename>42</filename>
<object><bbox><label>1</label><xmin>0</xmin><ymin>0</ymin><xmax>128</xmax><ymax>128</ymax></bbox></object>
<object><bbox><label>2</label><xmin>64</xmin><ymin>64</ymin><xmax>256</xmax><ymax>256</ymax></bbox></object>
</annotation>"""


def hand_flickr(boxes, size):
    m = np.zeros((size, size))
    for x0, y0, x1, y1 in boxes:
        t = np.zeros((size, size))
        t[int(size * y0 / 256):int(size * y1 / 256), int(size * x0 / 256):int(size * x1 / 256)] = 1
        m += t
    return np.minimum(m / 2, 1)


def test_flickr_map_text_and_path(tmp_path):
    g = flickr_gt_map(XML)
    assert g.shape == (224, 224) and g.dtype == np.float64
    np.testing.assert_array_equal(g, hand_flickr([(0, 0, 128, 128), (64, 64, 256, 256)], 224))
    assert g[0, 0] == 0.5 and g[100, 100] == 1 and g[200, 200] == 0.5 and g[0, 200] == 0
    p = tmp_path / "42.xml"
    p.write_text(XML)
    np.testing.assert_array_equal(flickr_gt_map(p, size=100), hand_flickr([(0, 0, 128, 128), (64, 64, 256, 256)], 100))
    np.testing.assert_array_equal(gt_maps_for_split(["42"], flickr_dir=tmp_path)[0], g.astype(np.float32))


def test_flickr_positional_children_and_errors(tmp_path):
    # no coordinate names: the first child is skipped, the next four are xmin, ymin, xmax, ymax
    xml = "<annotation><object><bbox><a>x</a><b>10</b><c>20</c><d>30</d><e>40</e></bbox></object></annotation>"
    np.testing.assert_array_equal(flickr_gt_map(xml, size=256), np.minimum(hand_flickr([(10, 20, 30, 40)], 256), 1))
    with pytest.raises(AnnotationError, match="missing.xml"):
        flickr_gt_map(tmp_path / "missing.xml")
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object>")
    with pytest.raises(AnnotationError, match="bad.xml"):
        flickr_gt_map(bad)


def test_vggss_rule_clips_both_sides():
    with pytest.warns(UserWarning, match=r"box \[-0.1, 0.5, 1.2, 0.75\] partly outside \[0, 1\], clipped"):
        g = vggss_gt_map([[-0.1, 0.5, 1.2, 0.75], [0.2, 0.1, 0.3, 0.2]], size=10)
    hand = np.zeros((10, 10))
    hand[5:7, 0:10] = 1  # int(10*0.75) = 7; negative -> 0; 1.2 -> 12, clipped by the slice
    hand[1:2, 2:3] = 1
    np.testing.assert_array_equal(g, hand)
    assert vggss_gt_map([], size=8).sum() == 0


needs_meta = pytest.mark.skipif(not (META / "vggss_test_5158.json").exists(), reason="../shared/metadata absent")


@needs_meta
def test_real_vggss_annotations():
    ann = load_vggss_annotations(META / "vggss_test_5158.json")
    assert len(ann) == 5158
    ids = load_id_list(META / "vggss_test_4692.csv")
    assert len(ids) == 4692 and set(ids) <= set(ann)
    flickr = load_id_list(META / "flickr_test249_in5k.csv")
    assert len(flickr) == 249 and flickr[0] == "10000130166"
    sel = ids[:40] + ids[-10:]
    maps = gt_maps_for_split(sel, vggss=ann)
    assert maps.shape == (50, 224, 224) and maps.dtype == np.float32
    assert set(np.unique(maps)) <= {0.0, 1.0}
    for k, i in enumerate(sel):
        hand = np.zeros((224, 224))
        for b in ann[i]:
            x0, y0, x1, y1 = (int(224 * max(v, 0)) for v in b)
            hand[y0:y1, x0:x1] = 1
        np.testing.assert_array_equal(maps[k], hand)
        np.testing.assert_array_equal(vggss_gt_map(ann[i]), hand)
    multi = [i for i in ids if len(ann[i]) > 1][:5]
    assert multi, "VGG-SS has multi-box entries"
    for i in multi:
        assert vggss_gt_map(ann[i]).sum() >= vggss_gt_map(ann[i][:1]).sum()


def test_id_lists_and_missing_files(tmp_path):
    (tmp_path / "a.csv").write_text("111,0\n222,5\n\n")
    assert load_id_list(tmp_path / "a.csv") == ["111", "222"]
    with pytest.raises(AnnotationError, match="nope.csv"):
        load_id_list(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match="no boxes"):
        gt_maps_for_split(["x"], vggss={"y": [[0, 0, 1, 1]]})
