from resnetctl.cli import main

if __name__ == "__main__":  # decode workers import this module again; only a real run starts the CLI
    main()
