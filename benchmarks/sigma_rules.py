"""150 generated Sigma rules shaped like SigmaHQ's Linux process_creation rules, for the engine
benchmark: the fields those rules use (Image, CommandLine, ParentImage, User, CurrentDirectory),
their modifiers (endswith/contains lists, contains|all, startswith, re) and their condition
forms (`selection`, `all of selection_*`, `1 of selection_*`, `selection and not filter`).

None matches the benchmark's benign processes; rule 0 matches its planted attacks.
"""

from __future__ import annotations

RULES = 150


def _header(index: int) -> str:
    return (
        f"title: Benchmark Sigma rule {index}\n"
        f"id: 5e1a0000-0000-4000-8000-{index:012d}\n"
        "status: test\nlevel: medium\n"
        "tags: [attack.execution, attack.t1059.004]\n"
        "logsource: {category: process_creation, product: linux}\n"
        "detection:\n"
    )


def _detection(index: int) -> str:
    n = index
    shape = index % 6
    if index == 0:
        return (
            "  selection:\n"
            "    CommandLine|contains: ['/dev/tcp/', 'stratum+tcp://', ' -u#-1 ']\n"
            "  condition: selection\n"
        )
    if shape == 0:
        return (
            f"  selection:\n    Image|endswith: ['/tool{n}', '/tool{n}-helper', '/t{n}d']\n"
            f"    CommandLine|contains|all: ['--exfil{n}', ' -o ']\n"
            "  condition: selection\n"
        )
    if shape == 1:
        return (
            "  selection_img:\n    Image|endswith: ['/bash', '/sh', '/dash', '/zsh']\n"
            f"  selection_cli:\n    CommandLine|contains: ['base64 -d{n}', 'xxd -r{n}', "
            f"'openssl enc{n}']\n"
            "  condition: all of selection_*\n"
        )
    if shape == 2:
        return (
            f"  selection_a:\n    CommandLine|contains: 'chattr -i /etc/{n}'\n"
            f"  selection_b:\n    Image|startswith: '/dev/shm/{n}'\n"
            f"  selection_c:\n    CommandLine|re: 'wget\\s+-q{n}\\S+\\|\\s*sh'\n"
            "  condition: 1 of selection_*\n"
        )
    if shape == 3:
        return (
            "  selection:\n    ParentImage|endswith: ['/nginx', '/httpd', '/php-fpm']\n"
            f"    Image|endswith: ['/whoami{n}', '/id{n}', '/uname{n}']\n"
            "  condition: selection\n"
        )
    if shape == 4:
        return (
            f"  selection:\n    CommandLine|contains: ['crontab -l{n}', 'systemctl enable x{n}']\n"
            "  filter:\n    User: root\n    CurrentDirectory|startswith: '/root'\n"
            "  condition: selection and not filter\n"
        )
    return (
        f"  selection:\n    Image|endswith: '/ncat{n}'\n"
        "    CommandLine|contains|windash: ['-e ', '--exec']\n"
        "  condition: selection\n"
    )


def sigma_rule_files() -> dict[str, str]:
    """file name → YAML text: 15 files of 10 rules each."""
    files: dict[str, str] = {}
    for first in range(0, RULES, 10):
        documents = [_header(i) + _detection(i) for i in range(first, first + 10)]
        files[f"bench-{first // 10:02d}.yml"] = "---\n".join(documents)
    return files
