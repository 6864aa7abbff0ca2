"""intra_op_threads: nested blocks restore the outer count; blocks open at once in threads share one count."""

import torch

from mgral_core.agent.runtime import intra_op_threads


def test_nested_blocks_restore_the_outer_count():
    before = torch.get_num_threads()
    with intra_op_threads(2):
        with intra_op_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before


def test_a_block_that_ends_first_leaves_the_others_count():
    """Two records in a thread pool: A opens, B opens, A ends while B still trains, then B ends."""
    before = torch.get_num_threads()
    with intra_op_threads(2):  # the process runs on 2 threads around both records
        a, b = intra_op_threads(1), intra_op_threads(1)
        a.__enter__()
        b.__enter__()
        a.__exit__(None, None, None)
        assert torch.get_num_threads() == 1  # B still runs on one thread
        b.__exit__(None, None, None)
        assert torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
