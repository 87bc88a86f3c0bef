import sys

from daemoneye.procmond.main import main

sys.exit(main())
