"""Cost of the body loop's MarkerArray per tracked person: build (numpy markers) and encode (CDR bytes).

    python -m ivlm_ros.bench.marker_encoding [--repeats 30] [--max-people 5]

For 1..--max-people people, each a fitted SMPL-X-size body (10475 vertices, 20908 faces, random contact, so
3 markers: TRIANGLE_LIST mesh, contact SPHERE_LIST, label; ~2.5 MB of CDR a person) in its ``person_<id>/``
namespace, a frame builds the markers with :func:`ivlm_ros.markers.interaction_markers` and encodes them with
:func:`ivlm_ros.marker_cdr.encode_marker_array`, as ``IvlmNode._publish_bodies`` does; the bytes are then
copied once and dropped (as the middleware copies a published message), so the allocator sees the node's churn
rather than one buffer reused in a tight loop (which hides the page faults of fresh large buffers).
The build is timed with the node's :class:`ivlm_ros.markers.CornerColourCache` (contacts unchanged, as on
most camera frames: contacts change at the VLM's rate) and, in brackets, without it (a new contact every frame).
No ROS needed. Prints the conditions, then per person count: bytes, build and encode mean / worst ms, encode
ms per person and minor page faults per encode; last line
``encode_ms_per_person_1=<f> encode_ms_per_person_<n>=<f>``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import numpy as np

from ivlm_core.bench.machine import describe_machine
from ivlm_core.pipeline import BodyPlacement, HumanContactEstimate, InteractionResult
from ivlm_ros.bench.node_overhead import SMPLX_FACES, SMPLX_VERTICES
from ivlm_ros.marker_cdr import encode_marker_array
from ivlm_ros.markers import CornerColourCache, interaction_markers, person_namespace

WARM_UP = 2


def fitted_person(rng: np.random.Generator, offset_m: float) -> InteractionResult:
    """A result with an SMPL-X-size body placed in the camera frame (sizes are what the cost depends on)."""
    vertices = rng.normal(size=(SMPLX_VERTICES, 3)) * [0.2, 0.6, 0.1] + [offset_m, 0.0, 3.0]
    faces = rng.integers(0, SMPLX_VERTICES, size=(SMPLX_FACES, 3))
    contact = rng.random(SMPLX_VERTICES).astype(np.float32) ** 4
    human = HumanContactEstimate(
        True, "<hands> [SEG]", ["hands"], np.zeros((0, 1, 1, 3), np.uint8), None, contact, "smplx"
    )
    placement = BodyPlacement(True, "fitted", vertices, faces)
    return InteractionResult("bottle", "human_contact", human, None, None, placement, None)


def measure(people: list[InteractionResult], repeats: int) -> dict[str, float]:
    """Build / encode timings (ms) and page faults of one frame's MarkerArray for ``people``; the build is timed
    with the node's colour cache (unchanged contacts, as between two contact updates) and without it."""
    build, build_uncached, encode, faults = [], [], [], []
    colour_cache = CornerColourCache()
    size = 0
    for i in range(WARM_UP + repeats):
        t0 = time.perf_counter()
        for track_id, result in enumerate(people):
            interaction_markers(result, 0.5, 0.5, ns_prefix=person_namespace(track_id))
        t0_cached = time.perf_counter()
        markers = []
        for track_id, result in enumerate(people):
            markers += interaction_markers(
                result, 0.5, 0.5, ns_prefix=person_namespace(track_id), colour_cache=colour_cache
            )
        t1 = time.perf_counter()
        faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t2 = time.perf_counter()
        raw = encode_marker_array(markers, 1700000000, 0, "camera_color_optical_frame")
        t3 = time.perf_counter()
        faults1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        size = len(raw)
        sent = bytearray(raw)  # the middleware's copy of a published message
        del markers, raw, sent
        if i >= WARM_UP:
            build_uncached.append((t0_cached - t0) * 1e3)
            build.append((t1 - t0_cached) * 1e3)
            encode.append((t3 - t2) * 1e3)
            faults.append(faults1 - faults0)
    return {
        "bytes": size,
        "build_mean": statistics.fmean(build),
        "build_worst": max(build),
        "build_uncached_mean": statistics.fmean(build_uncached),
        "build_uncached_worst": max(build_uncached),
        "encode_mean": statistics.fmean(encode),
        "encode_worst": max(encode),
        "faults": statistics.fmean(faults),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--max-people", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    everyone = [fitted_person(rng, 0.6 * i) for i in range(args.max_people)]
    print(
        f"conditions: machine: {describe_machine()}; numpy={np.__version__} "
        f"body={SMPLX_VERTICES} vertices/{SMPLX_FACES} faces, 3 markers a person, repeats={args.repeats} "
        f"(+{WARM_UP} warm-up)"
    )
    per_person = {}
    for count in range(1, args.max_people + 1):
        f = measure(everyone[:count], args.repeats)
        per_person[count] = f["encode_mean"] / count
        print(
            f"people={count} bytes={f['bytes']} build mean {f['build_mean']:.2f} worst {f['build_worst']:.2f} ms "
            f"(new contacts: {f['build_uncached_mean']:.2f} / {f['build_uncached_worst']:.2f}) | "
            f"encode mean {f['encode_mean']:.2f} worst {f['encode_worst']:.2f} ms "
            f"({per_person[count]:.2f} ms/person, {f['faults']:.0f} page faults)"
        )
    most = args.max_people
    print(f"encode_ms_per_person_1={per_person[1]:.3f} encode_ms_per_person_{most}={per_person[most]:.3f}")

if __name__ == "__main__":
    main()
