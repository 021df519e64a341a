"""What ``tools/train.py --resume`` (no path) resumes from.

Reference: mmengine writes ``last_checkpoint`` after each checkpoint; a run
killed while writing it leaves it empty, a work dir copied elsewhere leaves
it dangling, a kill during ``torch.save`` leaves a truncated ``iter_N.pth``.
"""
import torch

from rmoe_mm.engine.resume import find_resume_checkpoint, is_intact_checkpoint


def save(path):
    torch.save({'state_dict': {'w': torch.ones(3)}}, path)
    return str(path)


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_last_checkpoint_is_used_when_intact(tmp_path):
    save(tmp_path / 'iter_2.pth')
    named = save(tmp_path / 'iter_4.pth')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert find_resume_checkpoint(str(tmp_path)) == (str(tmp_path /
                                                         'iter_2.pth'), [])
    assert is_intact_checkpoint(named)


def test_empty_last_checkpoint_falls_back_to_newest_intact(tmp_path):
    save(tmp_path / 'iter_2.pth')
    save(tmp_path / 'iter_4.pth')
    save(tmp_path / 'iter_6.pth')
    truncate(tmp_path / 'iter_6.pth')
    (tmp_path / 'last_checkpoint').write_text('')
    path, warnings = find_resume_checkpoint(str(tmp_path))
    assert path == str(tmp_path / 'iter_4.pth')
    assert 'is empty' in warnings[0]
    assert 'iter_6.pth: not a complete checkpoint' in warnings[1]
    assert 'newest intact checkpoint instead' in warnings[2]


def test_dangling_last_checkpoint(tmp_path):
    save(tmp_path / 'epoch_3.pth')
    (tmp_path / 'last_checkpoint').write_text('/elsewhere/epoch_3.pth')
    path, warnings = find_resume_checkpoint(str(tmp_path))
    assert path == str(tmp_path / 'epoch_3.pth')
    assert 'names /elsewhere/epoch_3.pth, which does not exist' in warnings[0]


def test_nothing_to_resume(tmp_path):
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    path, warnings = find_resume_checkpoint(str(tmp_path))
    assert path is None and 'skipped' in warnings[0]
    assert find_resume_checkpoint(str(tmp_path / 'new')) == (None, [])
