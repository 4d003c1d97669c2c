from worker.gpus import device_for_child


def test_a_single_process_worker_keeps_what_it_was_given():
    assert device_for_child(0, 1, None) is None
    assert device_for_child(0, 1, "3") is None


def test_children_spread_over_the_visible_devices():
    assert [device_for_child(i, 2, None) for i in range(2)] == ["0", "1"]
    assert [device_for_child(i, 2, "2, 5") for i in range(2)] == ["2", "5"]
    # A replaced child gets a higher index: it still lands on a real device.
    assert device_for_child(3, 2, "2,5") == "5"


def test_a_task_on_several_gpus_gets_a_group_of_them():
    assert [device_for_child(i, 2, None, per_task=2) for i in range(2)] == ["0,1", "2,3"]
    assert [device_for_child(i, 2, "4,5,6,7", per_task=2) for i in range(2)] == ["4,5", "6,7"]
    assert device_for_child(3, 2, "4,5,6,7", per_task=2) == "6,7"  # a replaced child
    assert device_for_child(0, 1, "4,5", per_task=2) is None  # one child: the worker's devices as they are
