import sys

from recsys.web.app import main

sys.exit(main(sys.argv[1:]))
