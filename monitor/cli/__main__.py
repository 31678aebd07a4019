"""``python -m monitor.cli``: the ``trialwatch`` command without the console script."""

from monitor.cli import main

if __name__ == "__main__":
    main()
