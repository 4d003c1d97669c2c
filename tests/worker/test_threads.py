from worker.threads import threads_for_child


def test_the_setting_wins():
    assert threads_for_child(1, 1, 16, None) == 1
    assert threads_for_child(3, 4, 16, "8") == 3


def test_an_operators_omp_num_threads_stays():
    assert threads_for_child(None, 4, 16, "2") is None


def test_children_share_the_cores():
    assert threads_for_child(None, 1, 16, None) is None  # one child: torch's default, every core
    assert threads_for_child(None, 4, 16, None) == 4
    assert threads_for_child(None, 4, 2, None) == 1
    assert threads_for_child(None, 2, None, None) == 1
