from resnetctl.cli import main

main()
