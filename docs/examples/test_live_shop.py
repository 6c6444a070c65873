"""A live-shopping app's media path, tested against sfu with the sfu pytest plugin.

pip install "sfu[media]" pytest   -- then: pytest test_live_shop.py
"""

import pytest

from sfu.testing import WhepError, testmedia


def test_buyers_see_the_seller(sfu_server, sfu_stream, sfu_publisher, sfu_viewer):
    sfu_publisher(sfu_stream)  # the seller: synthetic VP8 + Opus over WHIP
    buyer = sfu_viewer(sfu_stream)  # a buyer, over WHEP
    buyer.wait_for_frames(30, timeout=10)
    assert sfu_server.stats()["streams"][sfu_stream]["viewers"] == 1


def test_real_pictures_get_through(sfu_stream, sfu_publisher, sfu_viewer, tmp_path):
    clip = testmedia.make_test_file(tmp_path / "clip.mp4", video="H264", frames=30)  # H.264 + Opus
    buyer = sfu_viewer(sfu_stream, decode=True, wait=False)  # joins before the seller: waits
    sfu_publisher(sfu_stream, source=clip)  # the file's own frames, at its own pace
    buyer.wait_for_frames(30, timeout=10)
    pictures = [decoded.frame for decoded in buyer.decoded_frames()]  # av.VideoFrame
    assert [testmedia.frame_number(picture) for picture in pictures] == list(range(30))
    assert (pictures[0].width, pictures[0].height) == (320, 240)


def test_private_show_needs_a_buyer_token(sfu_server_factory, sfu_publisher, sfu_viewer):
    server = sfu_server_factory(viewer_token_required=True)  # a second server, its own settings
    sfu_publisher("private", server=server)
    with pytest.raises(WhepError) as refused:
        sfu_viewer("private", server=server, token="not-a-token")
    assert refused.value.status == 401
    token = server.token("private", subscribe=True)
    sfu_viewer("private", server=server, token=token).wait_for_frames(5)


async def test_async_tests_work_too(sfu_stream, sfu_publisher, sfu_viewer):
    sfu_publisher(sfu_stream, video_codec="H264")
    sfu_viewer(sfu_stream).wait_for_frames(10)
